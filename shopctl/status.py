"""The truthful view of a shop: what the runtime sees joined with what Consul sees.

A service is healthy only when its instance runs AND every Consul check passes; a
container that crashed shows as exited/critical even though Consul still lists it.

`summarize` says what the rows add up to (nothing runs, Consul unreachable), so the CLI
says it once instead of on every row.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass

from shopctl.config import ShopConfig
from shopctl.units import ServiceState, instance_names, split_instance

CONSUL_UNREACHABLE = "Consul not reachable"


@dataclass(frozen=True)
class ServiceRow:
    name: str  # the instance: SERVICE, or SERVICE.N for a further replica
    kind: str
    state: str  # running | starting | restarting | exited | missing
    health: str  # passing | warning | critical | unknown (Consul unreachable)
    check_output: str
    address: str | None  # where Consul's check reaches it
    port: int | None  # its port at that address
    uptime_s: float | None
    restarts: int
    image: str | None
    request_rate: float | None = None  # req/s, filled in by shopctl.metrics when it has any
    service: str = ""  # the service the instance belongs to ("" = named as `name`)
    host_port: int | None = None  # where the host reaches it (127.0.0.1), if published
    instance_id: str | None = None  # container id or pid
    node: str | None = None  # the node it runs on, when the runtime has several (swarm)

    def __post_init__(self) -> None:
        if not self.service:
            object.__setattr__(self, "service", split_instance(self.name)[0])

    @property
    def healthy(self) -> bool:
        return self.state == "running" and self.health == "passing"

    def to_dict(self) -> dict:
        return {**asdict(self), "healthy": self.healthy}


def status_rows(
    config: ShopConfig,
    observed: Mapping[str, ServiceState],
    health: Mapping[str, object] | None,
    now: float | None = None,
) -> list[ServiceRow]:
    """One row per instance of each service of the config: those its replicas ask for,
    and any other that exists (left by a larger scale); `health` None means Consul was
    not reachable."""
    now = time.time() if now is None else now
    rows = []
    for name, svc in _instances(config, observed):
        state = observed.get(name)
        entry = None if health is None else health.get(name)
        if health is None:
            status, output = "unknown", CONSUL_UNREACHABLE
        elif entry is None:
            status, output = "critical", "not registered in Consul"
        else:
            status = entry.status
            failing = [c for c in entry.checks if c.status != "passing"] or list(entry.checks)
            output = (failing[0].output.strip() if failing else "")[:200]
        running = state is not None and state.state == "running"
        rows.append(ServiceRow(
            name=name,
            kind=svc.kind,
            state=state.state if state else "missing",
            health=status if state is not None else ("critical" if status != "unknown" else status),
            check_output=output,
            address=(state.address if state else None),
            port=(state.port or state.host_port) if state else None,
            host_port=state.host_port if state else None,
            instance_id=state.instance_id if state else None,
            node=(state.extra.get("node") if state else None) or None,
            uptime_s=(now - state.started_at) if running and state.started_at else None,
            restarts=state.restarts if state else 0,
            image=state.image if state else None,
            service=svc.name,
        ))
    return rows


def _instances(config: ShopConfig, observed: Mapping[str, ServiceState]):
    for service, svc in config.services.items():
        found = [name for name in observed if split_instance(name)[0] == service]
        # As many missing rows as instances are missing: a swarm names instances by
        # their task slots, which need not be 1..replicas after a scale-down.
        missing = [name for name in instance_names(service, svc.replicas) if name not in found]
        names = found + missing[:max(0, svc.replicas - len(found))]
        for name in sorted(names, key=split_instance):
            yield name, svc


@dataclass(frozen=True)
class InfraRow:
    """One of shopctl's own infra units (Consul, RabbitMQ, PostgreSQL, ...) as the
    runtime sees it: whether it runs, and where (the swarm's node)."""

    name: str
    state: str  # running | starting | restarting | exited
    node: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def infra_rows(observed: Mapping[str, ServiceState]) -> list[InfraRow]:
    """The infra units that exist, in start order (then any other, by name)."""
    from shopctl.infra_names import START_ORDER

    order = {name: index for index, name in enumerate(START_ORDER)}
    return [InfraRow(name, state.state, state.extra.get("node") or None)
            for name, state in sorted(observed.items(),
                                      key=lambda item: (order.get(item[0], len(order)), item[0]))]


@dataclass(frozen=True)
class StatusSummary:
    """What a set of status rows adds up to."""

    project: str
    services: int  # instances the config asks for, and others that exist
    running: int  # state "running"
    present: int  # any state but "missing" (running, starting, restarting, exited)
    consul: str | None  # "reachable" | "unreachable"; None with no services to tell by

    @property
    def nothing_present(self) -> bool:
        """No instance of any service exists (never started, or removed by `down`)."""
        return self.services > 0 and self.present == 0

    def to_dict(self) -> dict:
        return {"project": self.project, "consul": self.consul, "running": self.running}


def summarize(project: str, rows: list[ServiceRow]) -> StatusSummary:
    """`status_rows` marks every row health "unknown" exactly when Consul did not answer."""
    consul = None
    if rows:
        consul = "unreachable" if all(row.health == "unknown" for row in rows) else "reachable"
    return StatusSummary(
        project=project,
        services=len(rows),
        running=sum(row.state == "running" for row in rows),
        present=sum(row.state != "missing" for row in rows),
        consul=consul,
    )
