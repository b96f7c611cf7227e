"""The shared kernel: the value types that cross between the plan, the runtimes, the
registry, the image builders and the CLI, and the labels every object carries.

Nothing here does anything; `shopctl.runtime.base` holds the Runtime contract itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from shopctl.config import ShopConfig

State = Literal["running", "starting", "restarting", "exited", "missing"]

# Labels (docker) / metadata (local) every object a runtime creates carries, so
# `down` finds all of it and nothing is ever orphaned.
LABEL_PROJECT = "io.shopctl.project"
LABEL_SERVICE = "io.shopctl.service"
LABEL_HASH = "io.shopctl.config-hash"
LABEL_ROLE = "io.shopctl.role"  # "service" | "infra"

LABEL_INSTANCE = "io.shopctl.instance"  # 1..replicas: which of a service's instances

# A service's instances are named SERVICE (the first) and SERVICE.2 ... SERVICE.N: a
# service name cannot hold a ".", so an instance name never meets another service's, and
# the first instance keeps the names (container, unit, Consul ID) a single one always had.
INSTANCE_SEP = "."


def network_name(project: str) -> str:
    """The project's network (a bridge on docker, an overlay on a swarm)."""
    return f"shopctl-{project}"


def container_name(project: str, unit: str) -> str:
    """A unit's engine object: its container (docker) or its swarm service."""
    return f"shopctl-{project}-{unit}"


def volume_name(project: str, key: str) -> str:
    return f"shopctl-{project}-{key}-data"


def instance_name(service: str, index: int = 1) -> str:
    return service if index == 1 else f"{service}{INSTANCE_SEP}{index}"


def instance_names(service: str, replicas: int) -> list[str]:
    return [instance_name(service, index) for index in range(1, replicas + 1)]


def split_instance(name: str) -> tuple[str, int]:
    """'web.2' -> ('web', 2); 'web' -> ('web', 1)."""
    service, sep, index = name.rpartition(INSTANCE_SEP)
    if sep and index.isdigit() and int(index) >= 2:
        return service, int(index)
    return name, 1


Progress = Callable[[str, str], None]
"""progress(subject, message): a line of news for a live view ("shipping", "building image")."""


def no_progress(subject: str, message: str) -> None:
    return None


# -- units: what a runtime ensures, observes and removes -----------------------------------

ReadinessKind = Literal["http", "consul-leader", "amqp", "amqp-login", "postgres"]


@dataclass(frozen=True)
class Readiness:
    """How to tell that a unit serves, as data: `shopctl.readiness` holds the one
    definition of each kind, and both runtimes poll it the same way.

        http           GET http://127.0.0.1:<port><path> answers 200
        consul-leader  Consul's HTTP API on <port> names a leader (KV and catalog work)
        amqp           whatever listens on <port> speaks AMQP 0-9-1
        amqp-login     that, and `login` logs in (and `refused`, when given, does not)
        postgres       PostgreSQL on <port> lets `login` ("USER:PASSWORD") in
    """

    kind: ReadinessKind
    port: int  # on the host's loopback
    path: str = "/"
    login: str = field(default="", repr=False)  # an AMQP URI, or USER:PASSWORD
    refused: str = field(default="", repr=False)
    timeout: float = 60.0  # seconds from the start of the wait
    waiting: str = "waiting until ready"  # the progress line while polling


@dataclass(frozen=True)
class Setup:
    """Commands a runtime runs in a unit's own environment (exec in its container, or
    beside its process with its environment) while it answers but is not ready yet,
    e.g. giving a broker the project's user; retried until readiness holds or the
    readiness timeout (or `timeout`, when shorter) runs out, then `failure` is raised."""

    steps: tuple[tuple[str, ...], ...]
    stdin: str = field(default="", repr=False)  # local only: fed to every step
    tolerated: str = ""  # a failing step whose output contains this counts as done
    message: str = ""  # the progress line before the first run
    failure: str = ""
    hint: str = ""
    timeout: float | None = None
    env: Mapping[str, str] = field(default_factory=dict)  # local: added to the shell's


@dataclass(frozen=True)
class PortSpec:
    """A host port (on 127.0.0.1) a unit takes, and the shop.yaml setting it comes from
    (for the message when it is busy). `inner` is the container's port (docker)."""

    host: int
    inner: int | None = None
    setting: str = ""
    env_var: str | None = None  # the environment variable that overrides `setting`


@dataclass(frozen=True)
class UnitSpec:
    """One unit a runtime ensures (creates, keeps while its hash is unchanged, replaces
    when it changed), observes and removes: docker compose's "everything is a service".
    The infra builders (shopctl.infra) make these from the config; a runtime reads the
    fields of its flavour and ignores the others.

    Both:    name, role, ports, env, files, readiness, setup, config_hash, subject, noun
    docker:  image, command, volumes ({volume key: mount path}; the volume is named by
             the runtime from the project and the key), user, volume_owner
    local:   argv, dirs (folders made before start; the first is the working folder),
             death_signal, stop_grace, adopt_readiness, adopt_setup
    """

    name: str  # the unit's name: an infra part (shopctl.infra_names) or a service
    role: Literal["infra", "service"]
    config_hash: str  # a change replaces the unit; equal keeps it running
    image: str = ""
    command: tuple[str, ...] | None = None  # None: the image's own
    argv: tuple[str, ...] = ()
    ports: tuple[PortSpec, ...] = ()
    volumes: Mapping[str, str] = field(default_factory=dict)
    dirs: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict, repr=False)
    # {folder: {file name: content}} put in before the unit starts (docker: into the
    # container; local: on disk), owned by files_owner (uid, gid; docker only), with
    # files_mode: 0o400-ish keeps them private to that owner.
    files: Mapping[str, Mapping[str, bytes]] = field(default_factory=dict, repr=False)
    files_owner: tuple[int, int] = (0, 0)
    files_mode: int = 0o400
    user: str | None = None  # docker: "uid:gid"; None: the image's
    volume_owner: tuple[int, int] | None = None  # docker: hand volumes an older root wrote over
    readiness: Readiness | None = None  # None: running is ready
    setup: Setup | None = None
    # local: when nothing of ours runs and something already answers the base of
    # `adopt_readiness` (a broker of the machine's), it is used instead of starting one:
    # `adopt_setup` runs against it, and it becomes ready as `adopt_readiness` says.
    adopt_readiness: Readiness | None = None
    adopt_setup: Setup | None = None
    death_signal: str = "SIGKILL"
    stop_grace: float | None = None
    subject: str = ""  # progress lines go under this subject; "" means name
    noun: str = ""  # "agent", "broker": the local runtime's "starting agent on :8500"
    note: str = ""  # added to the starting line, e.g. " (takes a few seconds)"

    @property
    def shown_as(self) -> str:
        return self.subject or self.name

    @property
    def main_port(self) -> int | None:
        return self.ports[0].host if self.ports else None


@dataclass(frozen=True)
class InfraEndpoints:
    """How shopctl (on the host) and the services reach the shared infrastructure."""

    consul_http: str  # for shopctl on the host, e.g. "http://127.0.0.1:8500"
    amqp_uri: str  # for shopctl on the host
    service_consul_addr: str  # CONSUL_HTTP_ADDR as seen from inside a service
    service_amqp_uri: str  # SHOP_AMQP_URI as seen from inside a service
    prometheus_http: str | None = None
    # (host, port) where shopctl reaches the project's PostgreSQL to provision the
    # services' databases (shopctl.databases); None when it does not run
    postgres: tuple[str, int] | None = None


@dataclass(frozen=True)
class LaunchSpec:
    """Everything needed to start one service instance, computed by the orchestrator."""

    service: str
    env: Mapping[str, str]  # the full SHOP_* contract plus the service's own env
    config_hash: str  # hash of everything that should trigger a replace when it changes
    # name -> value of the files the runtime puts in the service's SHOP_SECRETS_DIR,
    # readable by the service alone (never in its environment: `docker inspect` shows it)
    secrets: Mapping[str, str] = field(default_factory=dict, repr=False)
    index: int = 1  # which of the service's instances (see instance_name)

    @property
    def instance(self) -> str:
        return instance_name(self.service, self.index)

    @property
    def fixed_ports(self) -> bool:
        """The first instance takes the ports shop.yaml declares on the host; the others
        take free ones (ephemeral), which they register in Consul."""
        return self.index == 1

    def for_instance(self, index: int) -> LaunchSpec:
        return replace(self, index=index)


@dataclass(frozen=True)
class ServiceState:
    """What a runtime observes about one service instance right now."""

    service: str
    state: State
    instance_id: str | None = None  # container id or pid
    address: str | None = None  # where Consul's checks reach it (container IP, 127.0.0.1)
    port: int | None = None  # the service's main port at that address
    host_port: int | None = None  # where the host reaches it (published port)
    started_at: float | None = None  # unix time
    restarts: int = 0
    image: str | None = None  # docker image tag; None for local processes
    config_hash: str | None = None
    # The last exit's code (shell style: 128+N for signal N) while the instance is down
    # (exited, or restarting after a crash); the local runtime also keeps it once the
    # child runs again. None when unknown.
    exit_code: int | None = None
    # Exits nobody asked for since this instance was created, counting one it is about
    # to be restarted after (restarts can lag: the restart comes after a backoff).
    crashes: int = 0
    extra: Mapping[str, str] = field(default_factory=dict)
    index: int = 1  # which of the service's instances (see instance_name)

    @property
    def instance(self) -> str:
        return instance_name(self.service, self.index)


@dataclass(frozen=True)
class LogLine:
    service: str
    text: str
    timestamp: float | None = None


def expand_instances(
    config: ShopConfig, names: Iterable[str], existing: Iterable[str]
) -> list[str]:
    """Names as a user gives them (a service, one instance of it, an infra part) as
    instance names: a service stands for each of its instances in `existing`, or for its
    first when none exists."""
    existing = sorted(existing, key=lambda n: split_instance(n))
    out: list[str] = []
    for name in names:
        if name in config.services:
            found = [n for n in existing if split_instance(n)[0] == name]
            out.extend(found or [name])
        else:
            out.append(name)
    return list(dict.fromkeys(out))
