"""The contract every runtime implements, and the value types that cross it.

A runtime knows how to make processes exist and how to see them. It does not decide
what should run (that is the plan, `shopctl.plan`), nor register anything in Consul
(`shopctl.registry`), nor print (the CLI does). Methods may block; the orchestrator
calls `start_service` for independent services from several threads at once, so
implementations must be thread-safe across different services.

Lifecycle verbs are the same in both runtimes: ensure_infra, observe, start_service,
stop_service, logs, down; `up` also watches a starting instance (instance) and checks
host ports before it starts anything (infra_ports, port_owners).

Units (shopctl.units.UnitSpec) are the runtimes' public vocabulary for anything they run
from a spec: start_unit / ensure_unit create a unit, keep it while its hash is the same
or replace it, and wait until its readiness holds; observe_units and remove_unit see
and remove them. shopctl's own infra is a list of such specs (shopctl.infra), which
start_infra runs; no code outside shopctl.runtime reaches into a runtime's privates.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from shopctl.units import (
    InfraEndpoints,
    LaunchSpec,
    LogLine,
    Progress,
    ServiceState,
    UnitSpec,
    no_progress,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from shopctl.config import ShopConfig
    from shopctl.ports import PortNeed

__all__ = ["Runtime"]


class Runtime(Protocol):
    name: str  # "docker" | "local"

    def ensure_infra(self, config: ShopConfig, progress: Progress = no_progress) -> InfraEndpoints:
        """Start the project's infra (Consul, RabbitMQ, PostgreSQL, Prometheus and its
        bridge, as configured) and wait until it answers; return the endpoints.
        Idempotent: a unit running as configured is kept, a changed one replaced, a
        disabled one removed. Exactly start_infra plus calling every waiter."""

    def start_infra(
        self, config: ShopConfig, progress: Progress = no_progress
    ) -> tuple[InfraEndpoints, dict[str, Callable[[], None]]]:
        """ensure_infra without the waiting: returns once the units run, with
        {part: wait}; each `wait()` blocks until that part is ready (or raises
        OperationFailed: it stopped, or its readiness timeout ran out). `up` lets slow
        parts boot while services start."""

    def start_unit(
        self, config: ShopConfig, spec: UnitSpec, progress: Progress = no_progress
    ) -> Callable[[], None]:
        """Create the unit, keep it (running) when it exists with spec.config_hash, or
        replace it; returns a function that blocks until spec.readiness holds (running
        spec.setup once it answers), raising OperationFailed when it stops first or
        times out. Busy host ports raise before anything is created."""

    def ensure_unit(
        self, config: ShopConfig, spec: UnitSpec, progress: Progress = no_progress
    ) -> None:
        """start_unit and its wait."""

    def observe_units(self, config: ShopConfig, role: str = "infra") -> dict[str, ServiceState]:
        """The project's units of `role` ("infra" | "service") that exist, by name."""

    def remove_unit(self, config: ShopConfig, name: str, role: str = "infra") -> None:
        """Stop and remove one unit (its data stays); a missing one is not an error."""

    def infra_endpoints(self, config: ShopConfig) -> InfraEndpoints | None:
        """The endpoints of infra that is already running, or None (never starts anything)."""

    def observe(self, config: ShopConfig) -> dict[str, ServiceState]:
        """The current state of every service of this project that exists in this runtime
        (keyed by service name); services that do not exist are absent."""

    def instance(self, config: ShopConfig, service: str) -> ServiceState | None:
        """The current state of one service's instance (None when it does not exist);
        cheap enough to ask several times a second while `up` waits for it."""

    def infra_ports(self, config: ShopConfig) -> list[PortNeed]:
        """The host ports starting the project's infra takes (Consul, RabbitMQ,
        Prometheus as enabled), including those its own running infra already holds."""

    def port_owners(
        self, config: ShopConfig, ports: list[int]
    ) -> dict[int, tuple[str | None, str | None]]:
        """For each busy port: (the unit of THIS project holding it: a service name or
        consul / rabbitmq / prometheus, else None; what the runtime knows of the holder,
        e.g. "container NAME", else None)."""

    def prepare(
        self, config: ShopConfig, services: list[str], progress: Progress = no_progress,
        cancel: threading.Event | None = None,
    ) -> None:
        """Build whatever starting needs (images for docker; nothing much for local).
        Raises OperationFailed naming the failing step; Cancelled once `cancel` is set
        (builds under way are stopped and leave nothing behind)."""

    def start_service(
        self, config: ShopConfig, spec: LaunchSpec, progress: Progress = no_progress
    ) -> ServiceState:
        """Start (or replace) one service instance from spec; returns once the process runs
        (not necessarily healthy). Replacing stops the old instance first."""

    def stop_service(self, config: ShopConfig, service: str) -> None:
        """Stop and remove one service instance; a missing one is not an error."""

    def reload_service(
        self, config: ShopConfig, spec: LaunchSpec, changed: list[tuple[str, Path | None]]
    ) -> ServiceState:
        """`shopctl dev`: give the running instance the changed source files and restart
        its process in place (no build, no new container). `changed` holds (name, file)
        pairs, the name `app/<path in the service folder>` or `shopkit/<path in the kit
        package>`, the file None when it was deleted. Returns the restarted instance."""

    def logs(
        self, config: ShopConfig, services: list[str], follow: bool, tail: int | None
    ) -> Iterator[LogLine]:
        """Log lines of the given services, oldest first, interleaved by time; with follow,
        keeps yielding until the caller stops iterating."""

    def down(self, config: ShopConfig, volumes: bool, progress: Progress = no_progress,
             images: bool = False) -> None:
        """Stop and remove every service and infra instance of the project and its network;
        data survives unless volumes is True. With images, afterwards also remove the
        images built for this project's services (never base or infra images, never
        another project's); an image the engine refuses to remove (still used by some
        other container) is reported through progress and kept. A runtime that builds no
        images (local) ignores it."""


class UnitLifecycle:
    """The waiting half of the unit verbs, the same on every runtime: a runtime gives
    start_infra and start_unit (which return waiters), this waits on them."""

    def ensure_infra(self, config: ShopConfig, progress: Progress = no_progress) -> InfraEndpoints:
        """start_infra, then wait until every part is ready."""
        endpoints, waiters = self.start_infra(config, progress)  # type: ignore[attr-defined]
        for wait in waiters.values():
            wait()
        return endpoints

    def ensure_unit(self, config: ShopConfig, spec, progress: Progress = no_progress) -> None:
        """start_unit, then wait until the unit is ready."""
        self.start_unit(config, spec, progress)()  # type: ignore[attr-defined]

