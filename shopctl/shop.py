"""A shop as the commands see it: one config, the runtime it lives in, its Consul.

This is the seam between the CLI and the core: each method is one user-level verb and
returns plain values for the CLI to print.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from shopctl.config import ShopConfig
from shopctl.errors import Cancelled, ShopctlError
from shopctl.plan import Plan
from shopctl.runtime.base import Runtime
from shopctl.state import ProjectState
from shopctl.status import InfraRow, ServiceRow, infra_rows, status_rows
from shopctl.units import (
    InfraEndpoints,
    LogLine,
    Progress,
    expand_instances,
    no_progress,
    split_instance,
)

if TYPE_CHECKING:
    from shopctl.saga.worker import WorkerChange, WorkerStatus


@dataclass
class UpResult:
    runtime: str
    plan: Plan
    seconds: float
    rows: list[ServiceRow] = field(default_factory=list)
    worker: WorkerChange | None = None

    def to_dict(self) -> dict:
        return {
            "runtime": self.runtime,
            "seconds": round(self.seconds, 2),
            "plan": self.plan.to_dict(),
            "services": [row.to_dict() for row in self.rows],
            "saga_worker": None if self.worker is None else {
                "action": self.worker.action, **self.worker.status.to_dict()},
        }


@dataclass(frozen=True)
class ProbeRow:
    service: str
    status: str
    latency_ms: float | None
    output: str

    def to_dict(self) -> dict:
        return {"service": self.service, "status": self.status,
                "latency_ms": None if self.latency_ms is None else round(self.latency_ms, 1),
                "output": self.output}


WORKER_SUBJECT = "saga-worker"  # what progress calls it


class Shop:
    def __init__(self, config: ShopConfig, runtime: Runtime, notice: str | None = None):
        self.config = config
        self.runtime = runtime
        self.notice = notice
        self.state = ProjectState(config.root)

    @classmethod
    def open(cls, config: ShopConfig, choice: str = "auto") -> Shop:
        from shopctl.runtime.select import choose, make_runtime

        state = ProjectState(config.root)
        name, notice = choose(choice, config, state.dir)
        return cls(config, make_runtime(name, config), notice)

    # -- helpers ---------------------------------------------------------------------

    def _registry(self, infra: InfraEndpoints):
        from shopctl.consul_acl import registry

        return registry(self.config, infra.consul_http)

    def _targets(self, services: list[str] | None) -> list[str]:
        from shopctl.orchestrate import with_dependencies

        return with_dependencies(self.config, services)

    def _specs(self, infra: InfraEndpoints, targets: list[str]):
        from shopctl.orchestrate import planned_specs

        return planned_specs(self.config, self.runtime, infra, self.state.jwt_secret(), targets)

    def _check_ports(self, targets: list[str]) -> None:
        from shopctl.launch import PLANNING_ENDPOINTS
        from shopctl.orchestrate import check_ports, plan_up

        # The plan does not depend on where the infra is (see launch_spec).
        plan, _ = plan_up(self.config, self.runtime, self._specs(PLANNING_ENDPOINTS, targets))
        check_ports(self.config, self.runtime, plan)

    def launch_specs(self, services: list[str]) -> dict:
        """What each of `services` is started with, against the infra as it runs now."""
        from shopctl.launch import PLANNING_ENDPOINTS

        infra = self.runtime.infra_endpoints(self.config) or PLANNING_ENDPOINTS
        return self._specs(infra, services)

    # -- verbs -----------------------------------------------------------------------

    def plan(self, services: list[str] | None = None) -> Plan:
        from shopctl.launch import PLANNING_ENDPOINTS
        from shopctl.orchestrate import plan_up

        targets = self._targets(services)
        infra = self.runtime.infra_endpoints(self.config) or PLANNING_ENDPOINTS
        plan, _ = plan_up(self.config, self.runtime, self._specs(infra, targets))
        return plan

    def up(
        self,
        services: list[str] | None = None,
        progress: Progress = no_progress,
        cancel: threading.Event | None = None,
        dependencies: bool = True,
    ) -> UpResult:
        """Raises Cancelled once `cancel` is set (see orchestrate.apply_up): what was
        started by then runs on (`running()` names it; `down` removes it). Without
        `dependencies`, exactly `services` are planned (`scale`: the others are left as
        they are, whatever their state)."""
        from shopctl import consul_acl
        from shopctl.orchestrate import (
            InfraStartup,
            apply_up,
            plan_up,
            provision_databases,
            push_settings,
        )
        from shopctl.runtime.select import remember

        def check() -> None:
            if cancel is not None and cancel.is_set():
                raise Cancelled("up cancelled")

        start = time.monotonic()
        targets = self._targets(services) if dependencies or not services else services
        self._check_ports(targets)  # before anything starts, so a conflict leaves nothing
        check()
        remember(self.state.dir, self.runtime.name)
        consul_acl.management_token(self.config)  # made now, before anything speaks with it
        # Infra boots (RabbitMQ takes seconds) while images are checked and services start.
        infra = InfraStartup(self.config, self.runtime, progress)
        # Where later commands (saga, config, status) reach Consul and the broker.
        self.state.record_infra_host(_host_of(infra.endpoints.consul_http or "127.0.0.1"))
        check()
        registry = self._registry(infra.endpoints)
        specs = self._specs(infra.endpoints, targets)
        plan, observed = plan_up(self.config, self.runtime, specs)

        def settings() -> None:  # once Consul answers, before the services read them
            push_settings(self.config, registry, targets)
            provision_databases(self.config, infra, cancel)

        apply_up(self.config, self.runtime, registry, plan, specs, observed, progress,
                 infra=infra, before_start=settings, cancel=cancel)
        check()
        worker = self._ensure_worker(progress)
        rows = [row for row in self.status() if row.service in targets]
        return UpResult(self.runtime.name, plan, time.monotonic() - start, rows, worker)

    def scale(
        self, wanted: dict[str, int], progress: Progress = no_progress,
        cancel: threading.Event | None = None,
    ) -> tuple[list, UpResult]:
        """Each service of `wanted` at its number of instances: set in shop.yaml (see
        shopctl.scale), then applied to those services alone."""
        from shopctl import scale

        changes = scale.changes(self.config, wanted)
        self.config = scale.write_replicas(self.config, wanted)
        return changes, self.up(list(wanted), progress, cancel, dependencies=False)

    def _ensure_worker(self, progress: Progress) -> WorkerChange:
        """Once the services pass: the saga worker as shop.yaml wants it."""
        from shopctl.saga import worker

        change = worker.ensure(self.config, self.state)
        if change.action != "none":
            pid = f" (pid {change.status.pid})" if change.status.pid else ""
            progress(WORKER_SUBJECT, f"{change.action}{pid}")
        return change

    def down(
        self, volumes: bool = False, progress: Progress = no_progress, images: bool = False
    ) -> None:
        from shopctl.saga import worker

        if worker.stop(self.config, self.state):  # first: it drives sagas over the services
            progress(WORKER_SUBJECT, "stopped")
        infra = self.runtime.infra_endpoints(self.config)
        if infra is not None:
            try:
                removed = self._registry(infra).deregister_project()
                progress("consul", f"deregistered {len(removed)} services")
            except ShopctlError as exc:
                progress("consul", f"not deregistered: {exc.message}")
        self.runtime.down(self.config, volumes, progress, images=images)

    def running(self) -> list[str]:
        """What of the project runs now: its infra parts, then its services (for the
        word a cancelled `up` leaves). Empty when the runtime cannot say."""
        infra = self.runtime.observe_units(self.config, "infra")
        services = self.runtime.observe(self.config)
        return [name for name, state in [*sorted(infra.items()), *services.items()]
                if state.state in ("running", "starting", "restarting")]

    def status(self) -> list[ServiceRow]:
        observed = self.runtime.observe(self.config)
        infra = self.runtime.infra_endpoints(self.config)
        # The runtime reports no endpoints unless all of its infra answers; Consul alone
        # (the broker down) still tells the services' health, on its published port.
        consul = infra.consul_http if infra is not None else (
            f"{self.state.infra_host()}:{self.config.infra.consul.port}"
            if self.config.infra.consul.enabled else None)
        health = None
        if consul:
            from shopctl.consul_acl import registry

            try:
                health = registry(self.config, consul, timeout=2.0).health()
            except ShopctlError:
                health = None
        return status_rows(self.config, observed, health)

    def infra(self) -> list[InfraRow]:
        """shopctl's own infra units of the project that exist, and their state."""
        return infra_rows(self.runtime.observe_units(self.config, "infra"))

    def worker(self) -> WorkerStatus:
        from shopctl.saga import worker

        return worker.observe(self.config, self.state)

    def probe(self, services: list[str] | None = None) -> list[ProbeRow]:
        from concurrent.futures import ThreadPoolExecutor

        from shopctl.registry import probe

        names = services or list(self.config.services)
        for name in names:
            self.config.service(split_instance(name)[0])
        observed = self.runtime.observe(self.config)
        names = expand_instances(self.config, names, observed)

        def one(name: str) -> ProbeRow:
            state = observed.get(name)
            if state is None or state.state != "running":
                current = state.state if state else "missing"
                return ProbeRow(name, "critical", None, f"not running ({current})")
            result = probe(state, self.config.services[state.service])
            return ProbeRow(name, result.status, result.latency_ms, result.output)

        with ThreadPoolExecutor(max_workers=8) as pool:
            return list(pool.map(one, names))

    def logs(self, services: list[str] | None, follow: bool, tail: int | None) -> Iterator[LogLine]:
        names = services or list(self.config.services)
        for name in names:  # a service, or one of its instances (SERVICE.N)
            self.config.service(split_instance(name)[0])
        return self.runtime.logs(self.config, names, follow, tail)


def _host_of(url: str) -> str:
    from urllib.parse import urlsplit

    return urlsplit(url if "://" in url else f"http://{url}").hostname or "127.0.0.1"
