"""The local runtime's infra units: Consul, RabbitMQ and PostgreSQL as supervised
processes on 127.0.0.1, then Prometheus and its Consul bridge (shopctl.prom.local), as
unit specs.

Pure but for looking binaries up on PATH and reading the project's state files;
ports nobody else needs (Consul's serf and server ports, the broker's distribution
port, the bridge's) come from `free_port`, which the runtime passes in.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from shopctl import broker, consul_acl, databases
from shopctl.errors import RuntimeUnavailable
from shopctl.fingerprint import data_hash
from shopctl.infra import postgres as pg
from shopctl.infra import rabbitmq_boot
from shopctl.infra_names import CONSUL, POSTGRES, RABBITMQ
from shopctl.prom import local as prom_local
from shopctl.state import ProjectState
from shopctl.units import PortSpec, Readiness, Setup, UnitSpec

if TYPE_CHECKING:
    from shopctl.config import ShopConfig

HOST = "127.0.0.1"
# Debian's /usr/sbin/rabbitmq-server re-runs itself through `su rabbitmq` when started as
# root, which would need the rabbitmq user to own our state dir; the script behind it
# runs the broker as whoever calls it.
DEBIAN_RABBITMQ_SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")


@dataclass(frozen=True)
class Options:
    """What the local runtime was constructed with, as far as its infra depends on it."""

    python: str  # runs the Consul bridge
    free_port: Callable[[], int]
    running_ports: Mapping[str, int]  # infra part -> the port its running unit has
    consul_timeout: float = 30.0
    rabbitmq_timeout: float = 90.0


def unit_name(part: str) -> str:
    """The local runtime's name for an infra part's unit: `_consul`, which no service
    name can spell."""
    return f"_{part}"


def units(config: ShopConfig, options: Options) -> list[UnitSpec]:
    """The project's infra in start order; a part that is disabled is absent."""
    ps = ProjectState(config.root)
    found = []
    if config.infra.consul.enabled:
        found.append(consul(config, ps, options))
    if config.infra.rabbitmq.enabled:
        found.append(rabbitmq(config, ps, options))
    if databases.enabled(config, "local"):
        found.append(postgres(config, ps))
    return [*found, *prom_local.units(config, ps, options.python, options.running_ports,
                                      options.free_port)]


def consul(config: ShopConfig, ps: ProjectState, options: Options) -> UnitSpec:
    """With ACLs, the agent's config is a private file (the management token is in it,
    so it goes neither on the command line nor in the environment)."""
    port = config.infra.consul.port
    binary = shutil.which("consul")
    if binary is None:
        raise RuntimeUnavailable(
            "the consul binary is not on PATH",
            hint="`make system` installs it (scripts/install-system.sh consul)",
        )
    data = ps.data_dir(unit_name(CONSUL))
    argv = consul_argv(binary, config.project, port, data, options.free_port(),
                       options.free_port())
    files: dict[str, dict[str, bytes]] = {}
    acl = ""
    if consul_acl.enabled(config):
        text = consul_acl.agent_config(consul_acl.management_token(config))
        files = {str(ps.secrets_dir): {"consul-acl.json": text.encode()}}
        argv += ["-config-file", str(ps.secrets_dir / "consul-acl.json")]
        acl = data_hash(text)[:16]
    return UnitSpec(
        name=CONSUL, role="infra", argv=tuple(argv), dirs=(str(data),),
        ports=(PortSpec(port, setting="infra.consul.port", env_var="SHOP_CONSUL_PORT"),),
        files=files, files_mode=0o600,
        readiness=Readiness("consul-leader", port, timeout=options.consul_timeout,
                            waiting="waiting for a leader"),
        noun="agent",
        config_hash=data_hash({"binary": binary, "port": port, "acl": acl})[:16],
    )


def rabbitmq(config: ShopConfig, ps: ProjectState, options: Options) -> UnitSpec:
    """A broker node of the project's own, or (adopt) the broker already answering AMQP on
    the port: the project's user is added to it, and its guest stays (not ours)."""
    port = config.infra.rabbitmq.port
    binary = rabbitmq_binary()
    data = ps.data_dir(unit_name(RABBITMQ))
    env = rabbitmq_env(config.project, port, options.free_port(), data)
    definitions = broker.definitions(config)
    user = broker.user(config)
    login = broker.uri(config, HOST, port)
    # From stdin: the machine's rabbitmqctl runs as another user, who cannot read
    # .shopctl. (A salted hash of the password, not the password.)
    ctl = rabbitmqctl_binary(own=True)
    own_setup = Setup(
        steps=((ctl, "import_definitions", "--format", "json"),
               (ctl, "delete_user", broker.GUEST)),
        stdin=definitions, tolerated="not exist",
        message=f"adding the user {user} and removing guest",
        failure=f"shopctl could not add the project's RabbitMQ user to its own broker "
                f"on :{port}",
        hint="`shopctl logs rabbitmq` shows the broker's side",
        env={key: env[key] for key in ("RABBITMQ_NODENAME", "HOME")})
    # A broker we reuse is up, so a refusal there (no cookie, no rights) is for good.
    reuse_setup = Setup(
        steps=((rabbitmqctl_binary(own=False), "import_definitions", "--format", "json"),),
        stdin=definitions, message=f"adding the user {user}",
        failure=f"shopctl could not add the project's RabbitMQ user to the broker it "
                f"reuses on :{port}",
        hint="set infra.rabbitmq.port to a free port, so shopctl runs a broker of the "
             "project's own", timeout=5.0)
    return UnitSpec(
        name=RABBITMQ, role="infra", argv=(binary,), env=env,
        dirs=(str(data), *(str(data / sub) for sub in ("mnesia", "log", "home"))),
        files={str(data): {"enabled_plugins": b"[].\n",
                           PRELOAD_FILE: rabbitmq_boot.PRELOAD.encode()}},
        files_mode=0o600,
        ports=(PortSpec(port, setting="infra.rabbitmq.port", env_var="SHOP_AMQP_PORT"),),
        readiness=Readiness("amqp-login", port, login=login,
                            refused=broker.guest_uri(HOST, port),
                            timeout=options.rabbitmq_timeout, waiting="waiting for AMQP"),
        setup=own_setup,
        adopt_readiness=Readiness("amqp-login", port, login=login, timeout=30.0),
        adopt_setup=reuse_setup,
        # The wrapper script turns SIGTERM into a clean broker stop; SIGKILL would leave
        # the Erlang VM it forked running without a parent.
        death_signal="SIGTERM", stop_grace=30.0,
        noun="broker", note=" (takes a few seconds)",
        config_hash=data_hash({"binary": binary, "port": port})[:16],
    )


SERVER_USER = "postgres"  # Debian's postgresql package's; PostgreSQL refuses to run as root


def postgres(config: ShopConfig, ps: ProjectState) -> UnitSpec:
    """The host's PostgreSQL (initdb, postgres) on 127.0.0.1:infra.postgres.port, with
    the start script and access policy shared with the containers (shopctl.infra.postgres)
    in its folder. Run by another user than root, PostgreSQL is run as this user, its
    data in .shopctl; as root, as the `postgres` user, its data where that user
    reaches it (ProjectState.system_data_dir), the superuser's password copied there
    for it alone."""
    port = config.infra.postgres.port
    binaries = postgres_binaries()
    databases.superuser_password(config)  # made now: the script reads its file
    secret = ps.secrets_dir / "postgres" / "_superuser"
    folder = ps.data_dir(unit_name(POSTGRES))
    files = {str(folder): {"start.sh": pg.START_SCRIPT.encode(), "pg_hba.conf": pg.HBA.encode()}}
    if os.geteuid() == 0:
        _server_user()
        home = ps.system_data_dir(unit_name(POSTGRES))
        env = {**pg.env(str(home / "data"), str(home / "conf" / secret.name),
                        str(home / "conf" / "pg_hba.conf"), port, HOST, binaries),
               "PG_USER": SERVER_USER, "PG_HOME": str(home), "PG_SOURCE": str(folder),
               "PG_SECRET": str(secret)}
        argv: tuple[str, ...] = ("sh", "-c", pg.AS_USER_SCRIPT)
    else:
        env = pg.env(str(folder / "data"), str(secret), str(folder / "pg_hba.conf"), port,
                     HOST, binaries)
        argv = ("sh", str(folder / "start.sh"))
    return UnitSpec(
        name=POSTGRES, role="infra", argv=argv, env=env, dirs=(str(folder),),
        files=files, files_mode=0o600,
        ports=(PortSpec(port, setting="infra.postgres.port"),),
        readiness=Readiness("postgres", port, login=f"{databases.SUPERUSER}:"
                            f"{databases.superuser_password(config)}", timeout=60.0,
                            waiting="waiting until it takes logins"),
        # The script turns SIGTERM into a fast shutdown; SIGKILL would leave the
        # server's backends without their postmaster.
        death_signal="SIGTERM", stop_grace=30.0, noun="server",
        config_hash=data_hash({"binaries": binaries, "port": port, "env": env, "files": {
            name: data.decode() for name, data in files[str(folder)].items()}})[:16],
    )


def postgres_binaries() -> str:
    """The folder of the host's initdb and postgres: on PATH, else Debian's newest
    /usr/lib/postgresql/N/bin."""
    found = shutil.which("postgres")
    if found is not None and shutil.which("initdb") is not None:
        return str(Path(found).resolve().parent)
    versions = sorted((p for p in Path("/usr/lib/postgresql").glob("*/bin")
                       if (p / "postgres").exists() and p.parent.name.isdigit()),
                      key=lambda p: int(p.parent.name))
    if not versions:
        raise RuntimeUnavailable(
            "PostgreSQL is not installed (no initdb and postgres on PATH nor under "
            "/usr/lib/postgresql)",
            hint="`make system` installs it (scripts/install-system.sh postgresql), or set "
                 "infra.postgres.enabled: false")
    return str(versions[-1])


def _server_user() -> None:
    import pwd

    try:
        pwd.getpwnam(SERVER_USER)
    except KeyError:
        raise RuntimeUnavailable(
            f"shopctl runs as root and PostgreSQL refuses to: it runs it as the user "
            f"{SERVER_USER}, which does not exist",
            hint="Debian's postgresql package makes it (`make system`); or run "
                 "`shopctl up` as another user than root") from None


def consul_argv(
    binary: str, project: str, http_port: int, data: Path, serf_port: int, server_port: int
) -> list[str]:
    """A single-node dev agent on loopback. Every port but HTTP is private or disabled, so
    agents of several projects (and test runs) can share a machine."""
    return [
        binary, "agent", "-dev", "-client", HOST, "-bind", HOST,
        "-http-port", str(http_port), "-dns-port", "-1", "-grpc-port", "-1",
        "-serf-wan-port", "-1", "-serf-lan-port", str(serf_port), "-server-port", str(server_port),
        "-data-dir", str(data), "-node", f"shopctl-{project}",
    ]


def rabbitmq_binary() -> str:
    if DEBIAN_RABBITMQ_SERVER.exists():
        return str(DEBIAN_RABBITMQ_SERVER)
    found = shutil.which("rabbitmq-server")
    if found is None:
        raise RuntimeUnavailable(
            "rabbitmq-server is not installed",
            hint="`make system` installs it (scripts/install-system.sh rabbitmq)",
        )
    return found


def rabbitmqctl_binary(own: bool = True) -> str:
    """For a node we run, the rabbitmqctl next to its server (Debian's raw script: the
    /usr/sbin wrapper would switch user and lose our node's cookie); for the machine's
    broker, the one on PATH (that wrapper finds the machine's cookie)."""
    beside = None
    if own:
        try:
            beside = Path(rabbitmq_binary()).resolve().parent / "rabbitmqctl"
        except RuntimeUnavailable:
            pass
    if beside is not None and beside.exists():
        return str(beside)
    found = shutil.which("rabbitmqctl")
    if found is None:
        raise RuntimeUnavailable("rabbitmqctl is not installed",
                                 hint="`make system` installs it (scripts/install-system.sh "
                                      "rabbitmq)")
    return found


PRELOAD_FILE = "preload.erl"  # in the broker's data folder (shopctl.infra.rabbitmq_boot)


def rabbitmq_env(project: str, port: int, dist_port: int, data: Path) -> dict[str, str]:
    """A broker node of our own: own name, ports, database, cookie and plugin list, so it
    neither meets the machine's broker nor reads or writes /var/lib/rabbitmq; its modules
    preloaded in parallel as it boots. The unit spec has the runtime make the folders, the
    plugin list and the preload file."""
    preload = rabbitmq_boot.with_preload(os.environ.get("ERL_AFLAGS"), data / PRELOAD_FILE)
    return {
        "RABBITMQ_NODENAME": f"shopctl-{project}@localhost",
        "RABBITMQ_NODE_IP_ADDRESS": HOST,
        "RABBITMQ_NODE_PORT": str(port),
        "RABBITMQ_DIST_PORT": str(dist_port),
        "RABBITMQ_MNESIA_BASE": str(data / "mnesia"),
        "RABBITMQ_LOG_BASE": str(data / "log"),
        "RABBITMQ_LOGS": "-",  # to stdout, i.e. into our timestamped log
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(data / "enabled_plugins"),
        "RABBITMQ_CONFIG_FILE": str(data / "rabbitmq"),  # absent: built-in defaults
        "HOME": str(data / "home"),  # where Erlang keeps the node's cookie
        **({"ERL_AFLAGS": preload} if preload else {}),
    }
