"""What the engine hands a participant call, and what a failed call raises.

Contract of every Actions implementation (shopctl.saga.participants is the live one)
    actions.run(call, step_call) -> dict    the JSON-able result, merged into the saga's
                                            context for the steps after it
    raises StepFailure                      with `retryable` saying whether the same call
                                            may succeed later (timeouts, 503, UNAVAILABLE,
                                            broker down) or never will (a refusal)
Every call is idempotent through `call.key`, derived from saga id + step + phase, so the
engine may repeat any call after a timeout or a crash; every call carries `call.timeout`
as the client's own deadline, so no step waits forever.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class StepFailure(Exception):
    """A step action failed; `retryable` decides between retrying and compensating."""

    def __init__(self, message: str, *, retryable: bool, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.code = code

    def to_dict(self) -> dict[str, Any]:
        return {"message": self.message, "retryable": self.retryable, "code": self.code}


def step_key(saga_id: str, step: str, phase: str = "forward") -> str:
    """The idempotency key of one step's calls: the same on every retry and resume."""
    return f"saga-{saga_id}-{step}" + ("" if phase == "forward" else f"-{phase}")


@dataclass(frozen=True)
class StepCall:
    """What an action gets: who calls, with which key, and the saga's data so far: its
    input, the context (the input plus the results of the forward steps that succeeded)
    and each succeeded step's own result."""

    saga_id: str
    step: str
    phase: str  # "forward" or "compensate"
    timeout: float
    context: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None  # why the saga compensates (compensations only)
    saga: str = ""  # the saga's name
    input: dict[str, Any] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)  # step name -> its result
    spec: dict[str, Any] | None = None  # the ActionSpec frozen with the saga, if any

    @property
    def key(self) -> str:
        return step_key(self.saga_id, self.step, self.phase)

    @property
    def forward_key(self) -> str:
        return step_key(self.saga_id, self.step)
