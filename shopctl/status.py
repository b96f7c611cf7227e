"""The truthful view of a shop: what the runtime sees joined with what Consul sees.

A service is healthy only when its instance runs AND every Consul check passes; a
container that crashed shows as exited/critical even though Consul still lists it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass

from shopctl.config import ShopConfig
from shopctl.runtime.base import ServiceState


@dataclass(frozen=True)
class ServiceRow:
    name: str
    kind: str
    state: str  # running | starting | restarting | exited | missing
    health: str  # passing | warning | critical | unknown (Consul unreachable)
    check_output: str
    address: str | None
    port: int | None
    uptime_s: float | None
    restarts: int
    image: str | None
    request_rate: float | None = None  # req/s, filled in by shopctl.metrics when it has any

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
    """One row per service of the config; `health` None means Consul was not reachable."""
    now = time.time() if now is None else now
    rows = []
    for name, svc in config.services.items():
        state = observed.get(name)
        entry = None if health is None else health.get(name)
        if health is None:
            status, output = "unknown", "Consul not reachable"
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
            port=(state.host_port or state.port) if state else None,
            uptime_s=(now - state.started_at) if running and state.started_at else None,
            restarts=state.restarts if state else 0,
            image=state.image if state else None,
        ))
    return rows
