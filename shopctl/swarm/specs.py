"""Pure builders: shopctl's unit and launch specs as Docker Engine swarm ServiceSpecs.

Everything here is a function of data (no engine, no clock), so the mapping is tested
alone (tests/unit/test_swarm_specs.py). The dicts are the Engine API's own JSON
(`POST /services/create`), which the docker SDK passes through as given.

Facts of the machines this was measured on (docs: the SCALE_OUT notes) shape it:
- no IPVS, so no virtual IPs and no routing mesh: every service uses `dnsrr` and
  publishes in `host` mode only;
- a service port published in host mode with no fixed host port gets one the node's
  engine picks per task, so replicas never collide on a node and start-first rolling
  updates can always place the new task (a fixed host port cannot: "no suitable node");
- `Init` makes SIGTERM reach Python (a rolling update otherwise waits the whole grace
  period per task);
- a HEALTHCHECK is what makes a task count as running, so a rolling update moves on
  (and a failing one rolls back) on the service's own health check.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from shopctl.fingerprint import data_hash
from shopctl.images.dockerfile import DATA_DIR, SERVICE_GID, SERVICE_UID
from shopctl.registry import METRICS_PATH, check_definition
from shopctl.units import (
    LABEL_HASH,
    LABEL_PROJECT,
    LABEL_ROLE,
    LABEL_SERVICE,
    container_name,
    network_name,
    volume_name,
)

if TYPE_CHECKING:
    from shopctl.config import ServiceConfig, ShopConfig
    from shopctl.units import LaunchSpec, UnitSpec

NS = 1_000_000_000  # the Engine API counts durations in nanoseconds
SECRETS_DIR = "/run/shop-secrets"  # a service's SHOP_SECRETS_DIR in its task containers
LABEL_PORT = "io.shopctl.port"  # the service's main port inside its containers
# JSON the registrar turns into each task's Consul registration (see registration_template).
LABEL_REGISTRATION = "io.shopctl.registration"
LABEL_SECRET = "io.shopctl.secret"  # the file name a swarm secret is mounted as
REGISTRAR = "registrar"  # the unit keeping Consul in step with the tasks
ADDRESS = "@ADDRESS@"  # placeholders the registrar fills in per task
PORT = "@PORT@"
MANAGER = "node.role==manager"
STOP_GRACE = 10  # seconds between SIGTERM and SIGKILL, as the docker runtime's
UPDATE_MONITOR = 5.0  # seconds a new task must stay healthy before the next is updated


def service_name(project: str, unit: str) -> str:
    """A unit's swarm service: named as its container would be on docker."""
    return container_name(project, unit)


def secret_name(project: str, unit: str, file: str, content: bytes) -> str:
    """Swarm secrets cannot change: a new content is a new secret, named by its hash,
    and the service is moved onto it by a rolling update. The engine takes 64
    characters at most: the file's name is in the hash (and in a label), not the name."""
    digest = data_hash({"file": file, "content": content.decode()})[:16]
    return f"{f'shopctl-{project}-{unit}'[:46]}-{digest}"


def labels(project: str, unit: str, role: str, config_hash: str, **extra: str) -> dict[str, str]:
    return {LABEL_PROJECT: project, LABEL_SERVICE: unit, LABEL_ROLE: role,
            LABEL_HASH: config_hash, **extra}


def secret_files(spec: UnitSpec) -> list[tuple[str, bytes]]:
    """(absolute path, content) of each file a unit is created with."""
    return [(f"{folder.rstrip('/')}/{name}", data)
            for folder, files in spec.files.items() for name, data in files.items()]


def secret_ref(secret_id: str, name: str, path: str, uid: int, gid: int, mode: int) -> dict:
    """A swarm secret mounted at an absolute path in the task's containers."""
    return {"SecretID": secret_id, "SecretName": name,
            "File": {"Name": path, "UID": str(uid), "GID": str(gid), "Mode": mode}}


def healthcheck(svc: ServiceConfig) -> dict[str, Any]:
    """shop.yaml's health check as the task's HEALTHCHECK, run by the service's own
    Python in its container against its own port: the same check Consul runs."""
    health = svc.health
    if svc.kind == "grpc":
        code = ("import sys, grpc\n"
                "from grpc_health.v1 import health_pb2 as p, health_pb2_grpc as g\n"
                f"c = grpc.insecure_channel('127.0.0.1:{svc.port}', "
                "options=[('grpc.enable_http_proxy', 0)])\n"
                f"r = g.HealthStub(c).Check(p.HealthCheckRequest(), timeout={health.timeout})\n"
                "sys.exit(0 if r.status == p.HealthCheckResponse.SERVING else 1)")
    else:
        code = ("import urllib.request as u\n"
                f"u.build_opener(u.ProxyHandler({{}})).open("
                f"'http://127.0.0.1:{svc.port}{health.path}', timeout={health.timeout})")
    return {
        "Test": ["CMD", "/opt/venv/bin/python", "-c", code],
        "Interval": _ns(min(health.interval, 2.0)),  # swarm waits on it to move on
        "Timeout": _ns(health.timeout),
        "Retries": 3,
        "StartPeriod": _ns(health.start_period),
    }


def update_config(order: str) -> dict[str, Any]:
    """One task at a time; a new task that fails (or turns unhealthy within the
    monitor period) rolls the whole service back to its previous spec."""
    return {"Parallelism": 1, "Delay": 0, "FailureAction": "rollback",
            "Monitor": _ns(UPDATE_MONITOR), "MaxFailureRatio": 0, "Order": order}


def rollback_config(order: str) -> dict[str, Any]:
    return {"Parallelism": 1, "Delay": 0, "FailureAction": "pause",
            "Monitor": _ns(UPDATE_MONITOR), "MaxFailureRatio": 0, "Order": order}


def service_ports(svc: ServiceConfig) -> list[int]:
    ports = [svc.port]
    if svc.metrics_port and svc.metrics_port != svc.port:
        ports.append(svc.metrics_port)
    return ports


def service_env(config: ShopConfig, svc: ServiceConfig, spec: LaunchSpec) -> list[str]:
    """spec.env plus what only the runtime decides, as the docker runtime does."""
    env = {key: str(value) for key, value in spec.env.items()}
    env.setdefault("SHOP_PROJECT", config.project)
    env.setdefault("SHOP_SERVICE", svc.name)
    env.setdefault("SHOP_PORT", str(svc.port))
    # The engine fills in the task's slot: payments.1, payments.2 ...
    env["SHOP_INSTANCE"] = f"{svc.name}.{{{{.Task.Slot}}}}"
    env["SHOP_HOST"] = "0.0.0.0"
    env["SHOP_DATA_DIR"] = DATA_DIR
    env["SHOP_SECRETS_DIR"] = SECRETS_DIR
    return [f"{key}={value}" for key, value in sorted(env.items())]


def registration_template(config: ShopConfig, svc: ServiceConfig) -> dict[str, Any]:
    """What the registrar registers for each running task of `svc`, with ADDRESS and
    PORT to fill in: the Consul check is shopctl.registry's, as for the other runtimes."""
    check = check_definition(svc, ADDRESS, PORT)  # type: ignore[arg-type]
    return {
        "Name": svc.name,
        "Tags": list(dict.fromkeys([*svc.tags, svc.kind])),
        "Meta": {"project": config.project, "kind": svc.kind, "runtime": "swarm",
                 "metrics_path": METRICS_PATH},
        "Port": svc.port,
        "MetricsPort": svc.metrics_port or svc.port,
        "Check": check,
    }


def service_spec(
    config: ShopConfig, spec: LaunchSpec, image: str, secrets: list[dict],
) -> dict[str, Any]:
    """The swarm service of one shop.yaml service: `replicas` tasks on the project's
    overlay network (alias: the service's name), placed as `placement` says, its data
    volume at /data (one per node), its secrets as files only its
    user reads, its health check, `init`, restart on failure, rolling updates with
    rollback, ports published per task in host mode (engine-chosen host ports)."""
    svc = config.services[spec.service]
    project = config.project
    swarm = config.infra.swarm
    name = service_name(project, svc.name)
    own = labels(project, svc.name, "service", spec.config_hash,
                 **{LABEL_PORT: str(svc.port),
                    LABEL_REGISTRATION: json.dumps(registration_template(config, svc),
                                                   sort_keys=True)})
    container = {
        "Image": image,
        "Labels": labels(project, svc.name, "service", spec.config_hash),
        "Env": service_env(config, svc, spec),
        "User": f"{SERVICE_UID}:{SERVICE_GID}",
        "Init": True,
        "Healthcheck": healthcheck(svc),
        "StopGracePeriod": STOP_GRACE * NS,
        "Secrets": secrets,
        "Mounts": [{"Type": "volume", "Source": volume_name(project, svc.name),
                    "Target": DATA_DIR,
                    "VolumeOptions": {"Labels": {LABEL_PROJECT: project,
                                                 LABEL_SERVICE: svc.name}}}],
    }
    ports = [{"Protocol": "tcp", "TargetPort": port, "PublishMode": "host"}
             for port in service_ports(svc)] if swarm.address == "node" else []
    return {
        "Name": name,
        "Labels": own,
        "TaskTemplate": {
            "ContainerSpec": container,
            "RestartPolicy": {"Condition": "any", "Delay": NS, "MaxAttempts": 0},
            "Placement": placement(svc.replicas),
            "Networks": [{"Target": network_name(project), "Aliases": [svc.name]}],
        },
        "Mode": {"Replicated": {"Replicas": svc.replicas}},
        "UpdateConfig": update_config(swarm.update_order),
        "RollbackConfig": rollback_config(swarm.update_order),
        "EndpointSpec": {"Mode": "dnsrr", "Ports": ports},
    }


def placement(replicas: int) -> dict[str, Any]:
    """A service of one instance runs on a manager, beside the infra: its /data volume
    is a node's, so it stays with its data when another node dies. Replicated services
    spread over every node (the swarm's default), each task with its own /data: state
    their instances share must live elsewhere (a database service)."""
    return {"Constraints": [MANAGER]} if replicas == 1 else {}


def unit_service_spec(
    config: ShopConfig, unit: UnitSpec, secrets: list[dict], *, host_ports: bool = True,
    mounts: tuple[dict, ...] = (),
) -> dict[str, Any]:
    """An infra unit as a one-task service on the manager: its volumes there (so its
    data stays where it was), its host ports published in host mode on the manager
    (where shopctl reaches them), stop-first updates (a fixed host port cannot be held
    twice)."""
    project = config.project
    container: dict[str, Any] = {
        "Image": unit.image,
        "Labels": labels(project, unit.name, unit.role, unit.config_hash),
        "Env": [f"{key}={value}" for key, value in sorted(unit.env.items())],
        "Hostname": unit.name,  # RabbitMQ's node name, hence its data, stays
        "Init": True,
        "StopGracePeriod": STOP_GRACE * NS,
        "Secrets": secrets,
        "Mounts": [*({"Type": "volume", "Source": volume_name(project, key), "Target": path,
                      "VolumeOptions": {"Labels": {LABEL_PROJECT: project,
                                                   LABEL_SERVICE: key}}}
                     for key, path in unit.volumes.items()), *mounts],
    }
    if unit.command is not None:
        container["Command"] = list(unit.command)
    if unit.user:
        container["User"] = unit.user
    ports = [{"Protocol": "tcp", "TargetPort": p.inner or p.host, "PublishedPort": p.host,
              "PublishMode": "host"} for p in unit.ports] if host_ports else []
    return {
        "Name": service_name(project, unit.name),
        "Labels": labels(project, unit.name, unit.role, unit.config_hash),
        "TaskTemplate": {
            "ContainerSpec": container,
            "RestartPolicy": {"Condition": "any", "Delay": NS, "MaxAttempts": 0},
            "Placement": {"Constraints": [MANAGER]},
            "Networks": [{"Target": network_name(project), "Aliases": [unit.name]}],
        },
        "Mode": {"Replicated": {"Replicas": 1}},
        "UpdateConfig": update_config("stop-first"),
        "RollbackConfig": rollback_config("stop-first"),
        "EndpointSpec": {"Mode": "dnsrr", "Ports": ports},
    }


def spec_hash(spec: Mapping[str, Any]) -> str:
    """What a created service is compared by (labels hold it: the engine adds defaults
    to what it stores, so the stored spec never equals ours)."""
    return data_hash(dict(spec))[:16]


def _ns(seconds: float) -> int:
    return int(seconds * NS)
