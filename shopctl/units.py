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


def instance_name(service: str, index: int = 1) -> str:
    return service if index == 1 else f"{service}{INSTANCE_SEP}{index}"


def instance_names(service: str, replicas: int) -> list[str]:
    return [instance_name(service, index) for index in range(1, replicas + 1)]


def split_instance(name: str) -> tuple[str, int]:
    """'payments.2' -> ('payments', 2); 'payments' -> ('payments', 1)."""
    service, sep, index = name.rpartition(INSTANCE_SEP)
    if sep and index.isdigit() and int(index) >= 2:
        return service, int(index)
    return name, 1


Progress = Callable[[str, str], None]
"""progress(subject, message): a line of news for a live view ("shipping", "building image")."""


def no_progress(subject: str, message: str) -> None:
    return None


@dataclass(frozen=True)
class InfraEndpoints:
    """How shopctl (on the host) and the services reach the shared infrastructure."""

    consul_http: str  # for shopctl on the host, e.g. "http://127.0.0.1:8500"
    amqp_uri: str  # for shopctl on the host
    service_consul_addr: str  # CONSUL_HTTP_ADDR as seen from inside a service
    service_amqp_uri: str  # SHOP_AMQP_URI as seen from inside a service
    prometheus_http: str | None = None


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
