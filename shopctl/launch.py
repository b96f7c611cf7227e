"""What each service is started with: its environment contract and config hash.

The same function feeds both runtimes, so a service sees the same variables in a
container and as a local process; only SHOP_HOST, SHOP_DATA_DIR and SHOP_SECRETS_DIR
are the runtime's to set, since only it knows where the process binds and where data
and secret files live.
"""

from __future__ import annotations

from shopctl import databases
from shopctl.bundle import kit_for
from shopctl.config import ShopConfig
from shopctl.consul_acl import service_token
from shopctl.fingerprint import data_hash, tree_hash
from shopctl.state import ProjectState
from shopctl.units import InfraEndpoints, LaunchSpec

INFRA_KEYS = frozenset({"SHOP_AMQP_URI", "CONSUL_HTTP_ADDR"})
PLANNING_ENDPOINTS = InfraEndpoints("", "", "", "")  # stands in for infra not yet started


def code_hash(config: ShopConfig, service: str) -> str:
    svc = config.services[service]
    roots = [config.root / svc.path, kit_for(config.root).package]
    if svc.kind == "grpc":
        roots.append(config.root / "protos")
    return tree_hash(roots)


def service_env(config: ShopConfig, service: str, infra: InfraEndpoints) -> dict[str, str]:
    svc = config.services[service]
    env = {
        "SHOP_PROJECT": config.project,
        "SHOP_SERVICE": service,
        "SHOP_PORT": str(svc.port),
        "SHOP_AMQP_URI": infra.service_amqp_uri,
        "CONSUL_HTTP_ADDR": infra.service_consul_addr,
        "PYTHONUNBUFFERED": "1",
    }
    if svc.metrics_port:
        env["SHOP_METRICS_PORT"] = str(svc.metrics_port)
    env.update({key: str(value) for key, value in svc.env.items()})
    return env


def launch_spec(
    config: ShopConfig, service: str, infra: InfraEndpoints, jwt_secret: str, runtime: str
) -> LaunchSpec:
    env = service_env(config, service, infra)
    secrets = {"jwt_secret": jwt_secret,
               "service_key": ProjectState(config.root).service_key()}
    token = service_token(config, service)
    if token:
        secrets["consul_token"] = token
    database = databases.service_url(config, service, runtime)
    if database:  # given or taken away, it changes the hash below: the service restarts
        secrets[databases.SECRET_FILE] = database
    svc = config.services[service]
    # Infra addresses follow from config.infra, hashed below; leaving them out lets
    # `up --dry-run` plan before any infra runs.
    stable_env = {k: v for k, v in env.items() if k not in INFRA_KEYS}
    fingerprint = data_hash({
        "runtime": runtime,
        # How many instances run changes none of them (`scale` adds or removes others).
        "service": svc.model_dump(mode="json", exclude={"replicas"}),
        # Prometheus only scrapes services; turning it on must not replace them. The
        # swarm section concerns that runtime's placement, not what a service runs. A
        # service's database reaches it as a secret (hashed below): turning PostgreSQL
        # on restarts the services that declared one, and no other.
        "infra": config.infra.model_dump(mode="json",
                                         exclude={"prometheus", "swarm", "postgres"}),
        "env": stable_env,
        "code": code_hash(config, service),
        "secrets": data_hash(secrets),  # a new secret restarts the service with it
        "base_image": config.infra.base_image if runtime == "docker" else None,
        # Where the swarm's nodes get the image (loaded, or this registry) is what a
        # service spec names: a change of it rolls the service. No key without a
        # registry, so hashes made before registries existed stay the same.
        **({"registry": config.infra.swarm.registry.model_dump(mode="json")}
           if runtime == "swarm" and config.infra.swarm.registry else {}),
    })
    return LaunchSpec(service=service, env=env, config_hash=fingerprint[:16], secrets=secrets)
