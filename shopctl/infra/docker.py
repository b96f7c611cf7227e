"""The docker runtime's infra units: Consul, RabbitMQ and PostgreSQL containers, then
Prometheus and its Consul bridge (shopctl.prom.docker), as unit specs. The swarm runtime
runs the same specs as services on a manager.

Containers of one project reach each other on its network by unit name (the runtime
gives every infra container its name as network alias): consul:8500, rabbitmq:5672,
postgres:5432.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shopctl import broker, consul_acl, databases
from shopctl.fingerprint import data_hash
from shopctl.images.base import (
    CONSUL_GID,
    CONSUL_IMAGE,
    CONSUL_UID,
    RABBITMQ_IMAGE,
    RABBITMQ_SERVER,
)
from shopctl.infra import postgres as pg
from shopctl.infra_names import CONSUL, POSTGRES, RABBITMQ
from shopctl.prom import docker as prom_docker
from shopctl.units import PortSpec, Readiness, Setup, UnitSpec

if TYPE_CHECKING:
    from shopctl.config import ShopConfig

HOST = "127.0.0.1"
CONSUL_PORT = 8500  # inside the container
AMQP_PORT = 5672
MANAGEMENT_PORT = 15672
READY_TIMEOUT = 120.0
CONFIG_DIR = "/run/shopctl"  # the files an infra container is created with
CONSUL_ACL_FILE = f"{CONFIG_DIR}/consul-acl.json"  # the management token is in it
RABBITMQ_DEFINITIONS = f"{CONFIG_DIR}/rabbitmq-definitions.json"  # the project's user
# More config the broker reads at boot (RABBITMQ_CONFIG_FILES takes a glob): beside the
# definitions, so one archive holds both.
RABBITMQ_CONF = f"{CONFIG_DIR}/rabbitmq.conf"


def units(config: ShopConfig, runtime: str = "docker") -> list[UnitSpec]:
    """The project's infra in start order, as `runtime` (docker, swarm) runs it; a part
    that is disabled is absent (and the runtime removes a unit of it that still runs)."""
    found = []
    if config.infra.consul.enabled:
        found.append(consul(config))
    if config.infra.rabbitmq.enabled:
        found.append(rabbitmq(config))
    if databases.enabled(config, runtime):
        found.append(postgres(config))
    return [*found, *prom_docker.units(config)]


def consul(config: ShopConfig) -> UnitSpec:
    """Consul with ACLs reads its config from a private file (the management token is in
    it), readable by the user shopctl's own image runs Consul as (nobody) alone; another
    image's user is unknown (the official one switches to its own), so any user of
    that container may read it."""
    settings = config.infra.consul
    files: dict[str, dict[str, bytes]] = {}
    command = None
    if consul_acl.enabled(config):
        text = consul_acl.agent_config(consul_acl.management_token(config))
        files = {CONFIG_DIR: {CONSUL_ACL_FILE.rsplit("/", 1)[1]: f"{text}\n".encode()}}
        command = ("consul", "agent", "-dev", "-client", "0.0.0.0", "-ui", "-node", "shopctl",
                   "-config-file", CONSUL_ACL_FILE)
    own_image = settings.image == CONSUL_IMAGE
    return UnitSpec(
        name=CONSUL, role="infra", image=settings.image, command=command,
        ports=(PortSpec(settings.port, CONSUL_PORT, "infra.consul.port", "SHOP_CONSUL_PORT"),),
        files=files,
        files_owner=(CONSUL_UID, CONSUL_GID) if own_image else (0, 0),
        files_mode=0o400 if own_image else 0o444,
        readiness=Readiness("consul-leader", settings.port, timeout=READY_TIMEOUT,
                            waiting="waiting for a leader"),
        config_hash=_hash(settings.image, command, files, settings.port),
    )


def rabbitmq(config: ShopConfig) -> UnitSpec:
    """shopctl's RabbitMQ imports the project's user at boot (a new broker then never has
    guest), instead of two `rabbitmqctl` calls of ~0.4 s each once it answers; a broker
    whose data predates the user (or another image) gets it from the setup steps. The
    definitions hold a salted hash of the password, not the password."""
    settings = config.infra.rabbitmq
    folder, definitions = RABBITMQ_DEFINITIONS.rsplit("/", 1)
    files = {folder: {definitions: f"{broker.definitions(config)}\n".encode()}}
    command = None
    if settings.image == RABBITMQ_IMAGE:
        conf = RABBITMQ_CONF.rsplit("/", 1)[1]
        files[folder][conf] = f"load_definitions = {RABBITMQ_DEFINITIONS}\n".encode()
        command = ("env", f"RABBITMQ_CONFIG_FILES={folder}/*.conf", RABBITMQ_SERVER)
    ports = [PortSpec(settings.port, AMQP_PORT, "infra.rabbitmq.port", "SHOP_AMQP_PORT")]
    if settings.management_port:
        ports.append(PortSpec(settings.management_port, MANAGEMENT_PORT,
                              "infra.rabbitmq.management_port"))
    return UnitSpec(
        name=RABBITMQ, role="infra", image=settings.image, command=command,
        ports=tuple(ports),
        # A fixed hostname (the runtime gives each unit its name) keeps RabbitMQ's node
        # name, hence its data on the volume, across container replacements.
        volumes={RABBITMQ: "/var/lib/rabbitmq"},
        files=files, files_mode=0o444,
        readiness=Readiness("amqp-login", settings.port, login=broker.uri(config, HOST,
                            settings.port), refused=broker.guest_uri(HOST, settings.port),
                            timeout=READY_TIMEOUT, waiting="waiting for AMQP"),
        setup=Setup(
            steps=(("rabbitmqctl", "import_definitions", RABBITMQ_DEFINITIONS),
                   ("rabbitmqctl", "delete_user", broker.GUEST)),
            tolerated="not exist",  # guest already gone
            message=f"adding the user {broker.user(config)} and removing guest",
            failure="shopctl could not add the project's RabbitMQ user to its broker",
            hint="`shopctl logs rabbitmq` shows the broker's side"),
        config_hash=_hash(settings.image, command, files, [p.host for p in ports]),
    )


def postgres(config: ShopConfig) -> UnitSpec:
    """PostgreSQL for the services' databases (shopctl.databases), as its data folder's
    owner (uid 999, never root), data on its volume. Its start script, access policy
    and superuser password are files only that user reads; the services' roles and
    databases are made by shopctl once it lets the superuser in."""
    settings = config.infra.postgres
    secret = databases.superuser_password(config)
    names = {"script": "postgres-start.sh", "password": "postgres-password",
             "hba": "pg_hba.conf"}
    files = {CONFIG_DIR: {names["script"]: pg.START_SCRIPT.encode(),
                          names["password"]: secret.encode(), names["hba"]: pg.HBA.encode()}}
    command = ("sh", f"{CONFIG_DIR}/{names['script']}")
    env = pg.env(pg.DATA_DIR, f"{CONFIG_DIR}/{names['password']}",
                 f"{CONFIG_DIR}/{names['hba']}", databases.INNER_PORT, "*")
    return UnitSpec(
        name=POSTGRES, role="infra", image=settings.image, command=command, env=env,
        user=f"{pg.POSTGRES_UID}:{pg.POSTGRES_GID}",
        ports=(PortSpec(settings.port, databases.INNER_PORT, "infra.postgres.port"),),
        volumes={POSTGRES: pg.DATA_DIR},
        files=files, files_owner=(pg.POSTGRES_UID, pg.POSTGRES_GID), files_mode=0o400,
        readiness=Readiness("postgres", settings.port, login=f"{databases.SUPERUSER}:{secret}",
                            timeout=READY_TIMEOUT, waiting="waiting until it takes logins"),
        config_hash=data_hash({"base": _hash(settings.image, command, files, settings.port),
                               "env": env})[:16],
    )


def _hash(image: str, command: tuple[str, ...] | None, files: dict[str, dict[str, bytes]],
          ports: object) -> str:
    return data_hash({
        "image": image, "command": list(command or ()), "ports": ports,
        "files": {folder: {name: data.decode() for name, data in entries.items()}
                  for folder, entries in files.items()},
    })[:16]
