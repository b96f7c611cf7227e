"""The saga engine: forward steps, pivot, compensation, recovery, all driven by the log.

Semantics (Garcia-Molina & Salem's sagas, with a pivot as in the literature):
  * steps before the pivot are compensatable; a failure there compensates, in reverse,
    every step that may have applied (succeeded, or outcome unknown after a timeout or
    a crash). A step refused with a non-retryable error applied nothing and is skipped.
  * the pivot (charge) decides: once it succeeded, the saga can only go forward.
  * steps after the pivot are retried forward, never compensated; when their retries
    run out the saga is `stuck` and `retry()` picks it up again.
  * a compensation is retried up to its step's limit; then the saga is `stuck`.

Retries use a small loop instead of tenacity: each attempt must be logged (started,
then succeeded or failed) around the call, the decision depends on our own retryable
flag, and a chaos failure must bypass it; a loop states all that in a few lines.

Durability: every transition is committed to the SagaLog before the next action, so
`resume()` can always continue: an interrupted step is run again with the same
idempotency key (all services honour it), or compensated when the saga was already
compensating. A reply that arrives after its step timed out is dropped by the client,
and whatever the late call did is covered by idempotency and the compensation.

A step's success is committed together with the transition that follows it (the next
step's start, or the saga's final status), in one transaction: both are on disk before
the next action, and a crash before that commit leaves the step `started`, which resume
runs again with the same key, exactly as after a crash during the call. A new saga is
committed with its first step's start. So a saga of four steps takes five commits, not
ten. Failures are committed at once (a backoff may follow them), and so is a transition
named by the crash hook, which therefore still kills right after that transition.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from shopctl.saga import log as L
from shopctl.saga.actions import StepCall, StepFailure

logger = logging.getLogger(__name__)

MAX_BACKOFF = 5.0
# Test hook: "STEP:STATE" makes the process SIGKILL itself right after logging that
# transition (see tests/integration/test_saga_live.py). Never set it in production.
CRASH_ENV = "SHOPCTL_SAGA_CRASH_AT"


class Actions(Protocol):
    def run(self, call: str, step_call: StepCall) -> dict[str, Any]: ...


@dataclass(frozen=True)
class StepDef:
    name: str
    call: str
    compensate: str | None
    pivot: bool
    timeout: float
    retries: int
    backoff: float


def snapshot(saga_config, kinds: dict[str, str]) -> dict[str, Any]:
    """The definition a saga runs with, frozen into its log row: the steps with their
    resolved settings, and the kind of each service they call."""
    steps = [s.model_dump(mode="json") for s in saga_config.steps]
    services = {s["call"].split(".")[0] for s in steps} | {
        s["compensate"].split(".")[0] for s in steps if s.get("compensate")}
    return {"name": saga_config.name, "steps": steps,
            "kinds": {name: kinds[name] for name in sorted(services) if name in kinds}}


def steps_of(definition: dict[str, Any]) -> list[StepDef]:
    return [StepDef(name=s["name"], call=s["call"], compensate=s.get("compensate"),
                    pivot=bool(s.get("pivot")), timeout=float(s.get("timeout", 10.0)),
                    retries=int(s.get("retries", 3)), backoff=float(s.get("backoff", 0.2)))
            for s in definition["steps"]]


class Engine:
    """Runs sagas recorded in `log` with `actions`.

    `publish(event_type, payload)` receives the outcome events (order_completed,
    order_failed, saga_stuck); a failure to publish is logged and never changes the
    saga. `on_event(StepEvent)` sees each transition after it is committed (the CLI's
    live timeline). `sleep` is injectable so tests do not wait for backoffs.
    """

    def __init__(self, log: L.SagaLog, actions: Actions, *,
                 publish: Callable[[str, dict], None] | None = None,
                 on_event: Callable[[L.StepEvent], None] | None = None,
                 sleep: Callable[[float], None] = time.sleep):
        self.log = log
        self.actions = actions
        self.publish = publish
        self.on_event = on_event
        self.sleep = sleep
        self.crash_at = os.environ.get(CRASH_ENV)
        # saga id -> successes not committed yet; they go with the saga's next commit.
        self._deferred: dict[str, list[L.Transition]] = {}

    # -- entry points ------------------------------------------------------------------

    def start(self, name: str, definition: dict[str, Any], input: dict[str, Any], *,
              idempotency_key: str | None = None,
              fail_at: str | None = None) -> tuple[L.SagaRecord, bool]:
        """Record a new saga (or find the one with this key) and run it to an end state.
        Returns (saga, created)."""
        steps = steps_of(definition)
        if fail_at is not None and fail_at not in {s.name for s in steps}:
            raise ValueError(f"--fail-at {fail_at!r} names no step of saga {name!r}")
        # A new saga is committed with its first step's start: one commit, not two.
        opening = [L.Transition(steps[0].name, L.STARTED, 1)] if steps else []
        saga, created, events = self.log.create_with(
            name, input, definition, opening, idempotency_key=idempotency_key,
            fail_at=fail_at)
        if not created:
            return self._drive(saga), False
        self._announce(events)
        return self._drive(saga, opened=events), True

    def run(self, saga_id: str) -> L.SagaRecord:
        """Drive the saga from whatever its log says to completed, compensated or stuck.
        Finished and stuck sagas are returned unchanged."""
        return self._drive(self.log.get(saga_id))

    def _drive(self, saga: L.SagaRecord,
               opened: list[L.StepEvent] | None = None) -> L.SagaRecord:
        """`opened`: the events start() committed with a new saga (its whole log)."""
        try:
            if saga.status == L.RUNNING:
                self._forward(saga, opened)
                saga = self.log.get(saga.id)
            if saga.status == L.COMPENSATING:
                self._compensate(saga)
                saga = self.log.get(saga.id)
            return saga
        finally:
            # Every path ends with a commit that takes them; after an exception they
            # are dropped, as a crash would drop them (the step is rerun on resume).
            self._deferred.pop(saga.id, None)

    resume = run  # an unfinished saga continues exactly where its log stops

    def resume_all(self) -> list[L.SagaRecord]:
        return [self.run(s.id) for status in L.UNFINISHED for s in self.log.list(status, 10_000)]

    def retry(self, saga_id: str) -> L.SagaRecord:
        """Pick up a stuck saga: forward when its pivot succeeded, else compensate."""
        saga = self.log.get(saga_id)
        if saga.status != L.STUCK:
            return self.run(saga.id)
        pivot_done = self._pivot_done(saga)
        self.log.set_status(saga.id, L.RUNNING if pivot_done else L.COMPENSATING)
        return self.run(saga.id)

    # -- forward -----------------------------------------------------------------------

    def _forward(self, saga: L.SagaRecord, opened: list[L.StepEvent] | None = None) -> None:
        steps = steps_of(saga.definition)
        events = self.log.events(saga.id) if opened is None else opened
        last = _last_forward(events)
        context = self._context(saga, events)
        begun = Counter(e.step for e in events if e.state == L.STARTED)
        pivot_passed = False
        for step in steps:
            event = last.get(step.name)
            if event is not None and event.state == L.SUCCEEDED:
                pivot_passed = pivot_passed or step.pivot
                continue
            if event is not None and event.state == L.FAILED and not event.error.get(
                    "retryable", True) and not pivot_passed:
                # Crashed after a final refusal was logged: forward is impossible.
                self._begin_compensation(saga, step, event.error["message"])
                return
            if opened and event is opened[-1] and event.state == L.STARTED:
                # start() logged this attempt's start with the saga: run it now.
                failure = self._attempts(saga, step, context, "forward", event.attempt,
                                         begun=True)
            else:
                failure = self._attempts(saga, step, context, "forward",
                                         begun[step.name] + 1)
            if failure is None:
                pivot_passed = pivot_passed or step.pivot
                continue
            reason = f"{step.name} failed: {failure.message}"
            if pivot_passed:
                self._stuck(saga, f"{reason} (after the pivot; retry forward with "
                                  f"`shopctl saga retry {saga.id}`)")
            else:
                self._begin_compensation(saga, step, reason)
            return
        self._set_status(saga, L.COMPLETED)
        self._publish("order_completed", saga, {"context": context})

    def _begin_compensation(self, saga: L.SagaRecord, step: StepDef, reason: str) -> None:
        self._set_status(saga, L.COMPENSATING, error=reason)

    # -- compensation ------------------------------------------------------------------

    def _compensate(self, saga: L.SagaRecord) -> None:
        events = self.log.events(saga.id)
        last_fwd = _last_forward(events)
        last_comp = _last_compensation(events)
        context = self._context(saga, events)
        begun = Counter(e.step for e in events if e.state == L.COMPENSATING_STEP)
        for step in reversed(steps_of(saga.definition)):
            fwd = last_fwd.get(step.name)
            if step.compensate is None or fwd is None:
                continue
            if fwd.state == L.FAILED and not fwd.error.get("retryable", True):
                continue  # refused for good: the step applied nothing
            if last_comp.get(step.name) == L.COMPENSATED_STEP:
                continue
            failure = self._attempts(saga, step, context, "compensate", begun[step.name] + 1)
            if failure is not None:
                self._stuck(saga, f"compensation {step.compensate} of {step.name} failed: "
                                  f"{failure.message} (saga failed because: {saga.error})")
                return
        self._set_status(saga, L.COMPENSATED)
        self._publish("order_failed", saga, {"reason": saga.error, "context": context})

    # -- one step, with retries ----------------------------------------------------------

    def _attempts(self, saga: L.SagaRecord, step: StepDef, context: dict[str, Any],
                  phase: str, first: int, begun: bool = False) -> StepFailure | None:
        """Run one step (or its compensation) until it succeeds, fails for good or runs
        out of attempts, numbering attempts from `first` (1 + the attempts already
        logged; with `begun`, attempt `first` is logged as started already). Merges a
        forward result into `context`; None on success."""
        forward = phase == "forward"
        begin, done, failed = ((L.STARTED, L.SUCCEEDED, L.FAILED) if forward else
                               (L.COMPENSATING_STEP, L.COMPENSATED_STEP, L.COMPENSATION_FAILED))
        call_name = step.call if forward else step.compensate
        failure: StepFailure | None = None
        for attempt in range(first, first + step.retries + 1):
            if not (begun and attempt == first):
                self._record(saga, step.name, begin, attempt)
            started = time.monotonic()
            try:
                if forward and saga.fail_at == step.name:
                    raise StepFailure(f"injected failure at {step.name} (--fail-at)",
                                      retryable=False, code="INJECTED")
                call = StepCall(saga.id, step.name, phase, step.timeout, dict(context),
                                reason=None if forward else saga.error)
                result = self.actions.run(call_name, call)
            except StepFailure as exc:
                failure = exc
            except Exception as exc:  # a bug in an adapter: log it, never retry blindly
                logger.exception("step action crashed")
                failure = StepFailure(f"{type(exc).__name__}: {exc}", retryable=False,
                                      code="INTERNAL")
            else:
                self._record(saga, step.name, done, attempt, defer=True,
                             duration=time.monotonic() - started, result=result)
                if forward:
                    context.update(result or {})
                return None
            self._record(saga, step.name, failed, attempt,
                         duration=time.monotonic() - started, error=failure.to_dict())
            if not failure.retryable:
                return failure
            if attempt < first + step.retries:
                self.sleep(min(MAX_BACKOFF, step.backoff * 2 ** (attempt - first)))
        return failure

    # -- helpers -----------------------------------------------------------------------

    def _record(self, saga: L.SagaRecord, step: str, state: str, attempt: int, *,
                defer: bool = False, **fields: Any) -> None:
        """Log a transition. With `defer` it is committed with the saga's next commit
        (which always comes before the next action); else now, with any deferred."""
        transition = L.Transition(step, state, attempt, **fields)
        if defer and self.crash_at != f"{step}:{state}":
            self._deferred.setdefault(saga.id, []).append(transition)
        else:
            self._commit(saga, [transition])

    def _set_status(self, saga: L.SagaRecord, status: str, error: str | None = None) -> None:
        self._commit(saga, [], status=status, error=error)

    def _commit(self, saga: L.SagaRecord, transitions: list[L.Transition], *,
                status: str | None = None, error: str | None = None) -> None:
        pending = self._deferred.pop(saga.id, [])
        self._announce(self.log.commit(saga.id, pending + transitions, status=status,
                                       error=error))

    def _announce(self, events: list[L.StepEvent]) -> None:
        """What follows each committed transition: the live view, and the crash hook."""
        for event in events:
            if self.on_event is not None:
                self.on_event(event)
            if self.crash_at == f"{event.step}:{event.state}":
                os.kill(os.getpid(), signal.SIGKILL)

    def _context(self, saga: L.SagaRecord,
                 events: list[L.StepEvent] | None = None) -> dict[str, Any]:
        """The input plus every forward result logged so far, in log order."""
        context = dict(saga.input)
        for event in self.log.events(saga.id) if events is None else events:
            if event.state == L.SUCCEEDED and isinstance(event.result, dict):
                context.update(event.result)
        return context

    def _pivot_done(self, saga: L.SagaRecord) -> bool:
        last = _last_forward(self.log.events(saga.id))
        return any(s.pivot and getattr(last.get(s.name), "state", None) == L.SUCCEEDED
                   for s in steps_of(saga.definition))

    def _stuck(self, saga: L.SagaRecord, reason: str) -> None:
        self._set_status(saga, L.STUCK, error=reason)
        self._publish("saga_stuck", saga, {"reason": reason})

    def _publish(self, event_type: str, saga: L.SagaRecord, extra: dict[str, Any]) -> None:
        if self.publish is None:
            return
        payload = {"saga_id": saga.id, "saga": saga.name, **extra}
        try:
            self.publish(event_type, payload)
        except Exception as exc:  # the log holds the outcome; events are best effort
            logger.warning("could not publish %s for saga %s: %s", event_type, saga.id, exc)


def _last_forward(events: list[L.StepEvent]) -> dict[str, L.StepEvent]:
    last: dict[str, L.StepEvent] = {}
    for event in events:
        if event.state in (L.STARTED, L.SUCCEEDED, L.FAILED):
            last[event.step] = event
    return last


def _last_compensation(events: list[L.StepEvent]) -> dict[str, str]:
    last: dict[str, str] = {}
    for event in events:
        if event.state in (L.COMPENSATING_STEP, L.COMPENSATED_STEP, L.COMPENSATION_FAILED):
            last[event.step] = event.state
    return last
