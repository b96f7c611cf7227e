"""Plan, then apply: what `up` would do to each service, decided without side effects.

The plan compares what should run (a LaunchSpec with its config hash) with what runs
(the runtime's observed ServiceState). Execution is a separate step, which is what makes
`up --dry-run` honest: it prints exactly the plan `up` would apply.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from shopctl.units import ServiceState


class Action(StrEnum):
    CREATE = "create"  # nothing runs: start it
    RECREATE = "recreate"  # runs with another config or code: replace it
    START = "start"  # exists with the same config but is not running: start it again
    NOOP = "noop"  # runs with the same config: leave it alone


@dataclass(frozen=True)
class Step:
    service: str
    action: Action
    reason: str


@dataclass(frozen=True)
class Plan:
    levels: tuple[tuple[Step, ...], ...]  # services of one level are independent

    @property
    def steps(self) -> list[Step]:
        return [step for level in self.levels for step in level]

    @property
    def changes(self) -> list[Step]:
        return [step for step in self.steps if step.action is not Action.NOOP]

    def to_dict(self) -> list[dict[str, str]]:
        return [
            {"service": s.service, "action": s.action.value, "reason": s.reason}
            for s in self.steps
        ]


def decide(desired_hash: str, observed: ServiceState | None) -> tuple[Action, str]:
    if observed is None or observed.state == "missing":
        return Action.CREATE, "not running"
    if observed.config_hash != desired_hash:
        return Action.RECREATE, "config or code changed"
    if observed.state in ("running", "starting", "restarting"):
        return Action.NOOP, "up to date"
    return Action.START, f"{observed.state}"


def make_plan(
    levels: list[list[str]],
    desired_hashes: Mapping[str, str],
    observed: Mapping[str, ServiceState],
) -> Plan:
    """One Step per service in `desired_hashes`, grouped by dependency level."""
    out = []
    for level in levels:
        steps = []
        for name in level:
            if name not in desired_hashes:
                continue
            action, reason = decide(desired_hashes[name], observed.get(name))
            steps.append(Step(name, action, reason))
        if steps:
            out.append(tuple(steps))
    return Plan(tuple(out))
