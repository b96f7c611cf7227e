"""The shared kernel: the value types that cross between the plan, the runtimes, the
registry, the image builders and the CLI, and the labels every object carries.

Nothing here does anything; `shopctl.runtime.base` holds the Runtime contract itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

State = Literal["running", "starting", "restarting", "exited", "missing"]

# Labels (docker) / metadata (local) every object a runtime creates carries, so
# `down` finds all of it and nothing is ever orphaned.
LABEL_PROJECT = "io.shopctl.project"
LABEL_SERVICE = "io.shopctl.service"
LABEL_HASH = "io.shopctl.config-hash"
LABEL_ROLE = "io.shopctl.role"  # "service" | "infra"

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


@dataclass(frozen=True)
class LogLine:
    service: str
    text: str
    timestamp: float | None = None
