"""Plan, then apply: what `up` would do to each service, decided without side effects.

The plan compares what should run (a LaunchSpec with its config hash) with what runs
(the runtime's observed ServiceState). Execution is a separate step, which is what makes
`up --dry-run` honest: it prints exactly the plan `up` would apply.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from shopctl.units import ServiceState, split_instance


class Action(StrEnum):
    CREATE = "create"  # nothing runs: start it
    RECREATE = "recreate"  # runs with another config or code: replace it
    START = "start"  # exists with the same config but is not running: start it again
    NOOP = "noop"  # runs with the same config: leave it alone
    REMOVE = "remove"  # an instance beyond the service's replicas: stop and remove it


@dataclass(frozen=True)
class Step:
    service: str
    action: Action
    reason: str
    instance: str = ""  # the instance the step applies to; "" = the service's first

    def __post_init__(self) -> None:
        if not self.instance:
            object.__setattr__(self, "instance", self.service)

    @property
    def starts(self) -> bool:
        """Whether applying the step leaves an instance running."""
        return self.action is not Action.REMOVE


@dataclass(frozen=True)
class Plan:
    levels: tuple[tuple[Step, ...], ...]  # services of one level are independent

    @property
    def steps(self) -> list[Step]:
        return [step for level in self.levels for step in level]

    @property
    def changes(self) -> list[Step]:
        return [step for step in self.steps if step.action is not Action.NOOP]

    @property
    def built(self) -> list[str]:
        """The services whose new instances need what `prepare` makes (images), once each."""
        return list(dict.fromkeys(step.service for step in self.changes if step.starts))

    def to_dict(self) -> list[dict[str, str]]:
        return [
            {"service": s.service, "instance": s.instance, "action": s.action.value,
             "reason": s.reason}
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
    """One Step per instance in `desired_hashes` (keyed by instance name, see
    shopctl.units.instance_name), grouped by their services' dependency level, plus a
    REMOVE step for each observed instance of a planned service beyond its replicas."""
    wanted: dict[str, list[str]] = {}
    for instance in desired_hashes:
        wanted.setdefault(split_instance(instance)[0], []).append(instance)
    extra: dict[str, list[str]] = {}
    for instance in observed:
        service = split_instance(instance)[0]
        if service in wanted and instance not in desired_hashes:
            extra.setdefault(service, []).append(instance)
    out = []
    for level in levels:
        steps = []
        for name in level:
            for instance in sorted(wanted.get(name, ()), key=_index):
                action, reason = decide(desired_hashes[instance], observed.get(instance))
                steps.append(Step(name, action, reason, instance))
            for instance in sorted(extra.get(name, ()), key=_index):
                steps.append(Step(name, Action.REMOVE, "beyond the service's replicas",
                                  instance))
        if steps:
            out.append(tuple(steps))
    return Plan(tuple(out))


def _index(instance: str) -> int:
    return split_instance(instance)[1]
