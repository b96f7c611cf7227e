"""The saga engine: forward steps, pivot, compensation, recovery, all driven by the log.

Semantics (Garcia-Molina & Salem's sagas, with a pivot as in the literature):
  * steps before the pivot are compensatable; a failure there compensates, in reverse,
    every step that may have applied (succeeded, or outcome unknown after a timeout or
    a crash). A step refused with a non-retryable error applied nothing and is skipped.
  * the pivot decides: once it succeeded, the saga can only go forward.
  * a failure that may pass is retried, with capped exponential backoff and jitter,
    until the step's deadline (60 s by default: longer than an ordinary restart of a
    service or the broker) or its `retries`; a compensation is retried the same way.
  * steps after the pivot are retried forward, never compensated; when their retries
    run out the saga is `stuck` and `retry()` picks it up again.
  * a compensation is retried up to its step's limit; then the saga is `stuck`.
  * a step whose outcome is unknown (it timed out, or kept failing in a way that may
    pass) is settled before it is compensated: it is repeated forward with its own key,
    which an idempotent participant answers with what the first call did. Its result
    then feeds the compensation; a refusal means it applied nothing (no compensation);
    a failure that may pass leaves it unknown, and the compensation runs anyway with
    the forward key (a participant's compensation must undo whatever that key did, or
    nothing, and make a late forward call with that key fail). The repeat follows the
    step's own retry policy, so an outage that outlasted the forward attempts may pass.

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

import dataclasses
import logging
import os
import random
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from shopctl.errors import UsageError
from shopctl.saga import log as L
from shopctl.saga.actions import StepCall, StepFailure
from shopctl.saga.store import SagaStore

logger = logging.getLogger(__name__)

MAX_BACKOFF = 5.0
# Test hook: "STEP:STATE" makes the process SIGKILL itself right after logging that
# transition (see tests/integration/test_saga_live.py). Never set it in production.
CRASH_ENV = "SHOPCTL_SAGA_CRASH_AT"


class SagaNotAbortable(UsageError):
    def __init__(self, saga: L.SagaRecord, message: str):
        super().__init__(message, hint="`shopctl saga resume ID` continues an unfinished "
                                       "saga; a finished one needs nothing")
        self.saga = saga


class Actions(Protocol):
    def run(self, call: str, step_call: StepCall) -> dict[str, Any]: ...


class Publisher(Protocol):
    def notify(self) -> None: ...


# The outcome events a saga NAME publishes: routing keys NAME.completed and so on.
COMPLETED_EVENT, COMPENSATED_EVENT, STUCK_EVENT = "completed", "compensated", "stuck"


def event_type(saga: str, outcome: str) -> str:
    return f"{saga}.{outcome}"


@dataclass(frozen=True)
class StepDef:
    name: str
    call: str
    compensate: str | None
    pivot: bool
    timeout: float
    retries: int | None  # None: until the deadline
    backoff: float
    max_backoff: float = MAX_BACKOFF
    deadline: float = 60.0
    call_spec: dict[str, Any] | None = None
    compensate_spec: dict[str, Any] | None = None


def snapshot(config, saga_name: str) -> dict[str, Any]:
    """The definition a saga runs with, frozen into its log row: the steps with their
    resolved settings, the contract of every action they call, and the declared input."""
    from shopctl.saga.contract import resolve

    saga_config = config.sagas[saga_name]
    steps = [s.model_dump(mode="json") for s in saga_config.steps]
    actions = {}
    for step in steps:
        for call in (step["call"], step.get("compensate")):
            if call and call not in actions:
                service, _, action = call.partition(".")
                svc = config.services[service]
                declared = svc.actions.get(action)
                spec = resolve(service, svc.kind, action,
                               None if declared is None else declared.model_dump(mode="json"))
                actions[call] = spec.to_dict()
    return {"name": saga_config.name, "steps": steps, "actions": actions,
            "input": {k: v.model_dump(mode="json") for k, v in saga_config.input.items()}}


def steps_of(definition: dict[str, Any]) -> list[StepDef]:
    actions = definition.get("actions") or {}
    return [StepDef(name=s["name"], call=s["call"], compensate=s.get("compensate"),
                    pivot=bool(s.get("pivot")), timeout=float(s.get("timeout", 10.0)),
                    retries=None if s.get("retries") is None else int(s["retries"]),
                    backoff=float(s.get("backoff", 0.2)),
                    max_backoff=float(s.get("max_backoff", MAX_BACKOFF)),
                    deadline=float(s.get("deadline", 60.0)),
                    call_spec=actions.get(s["call"]),
                    compensate_spec=actions.get(s.get("compensate")))
            for s in definition["steps"]]


class Engine:
    """Runs sagas recorded in `log` with `actions`.

    Outcome events (NAME.completed, NAME.compensated, NAME.stuck) go to the log's outbox in
    the same transaction as the status they announce; `publisher.notify()` is called
    after such a commit (an OutboxPublisher, see shopctl.saga.outbox), so publishing never
    delays a saga and an event is never lost with a crash or a broker outage.
    `on_event(StepEvent)` sees each transition after it is committed (the CLI's live
    timeline). `sleep` is injectable so tests do not wait for backoffs.

    One process drives a saga at a time: a saga that another live process drives is
    refused with SagaBusy (see SagaLog.claim), a crashed driver's sagas are taken over
    (on PostgreSQL once its lease ran out, see shopctl.saga.pglog).
    """

    def __init__(self, log: SagaStore, actions: Actions, *,
                 publisher: Publisher | None = None,
                 on_event: Callable[[L.StepEvent], None] | None = None,
                 sleep: Callable[[float], None] = time.sleep,
                 jitter: Callable[[], float] = lambda: random.uniform(0.5, 1.0)):
        self.log = log
        self.actions = actions
        self.publisher = publisher
        self.on_event = on_event
        self.sleep = sleep
        self.jitter = jitter
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
            raise UsageError(f"--fail-at {fail_at!r} names no step of saga {name!r}",
                             hint=f"steps: {', '.join(s.name for s in steps)}")
        # A new saga is committed with its first step's start: one commit, not two.
        opening = [L.Transition(steps[0].name, L.STARTED, 1)] if steps else []
        saga, created, events = self.log.create_with(
            name, input, definition, opening, idempotency_key=idempotency_key,
            fail_at=fail_at)
        if not created:
            return self.run(saga.id), False
        self._announce(events)
        return self._drive(saga, opened=events), True

    def run(self, saga_id: str, *, force: bool = False) -> L.SagaRecord:
        """Drive the saga from whatever its log says to completed, compensated or stuck.
        Finished and stuck sagas are returned unchanged. SagaBusy when another live
        process drives it (`force`: take it over anyway)."""
        saga = self.log.get(saga_id)
        if saga.status not in L.UNFINISHED:
            return saga
        return self._drive(self.log.claim(saga.id, force=force))

    def _drive(self, saga: L.SagaRecord,
               opened: list[L.StepEvent] | None = None) -> L.SagaRecord:
        """Run a saga this process has claimed (or created) to its next end state.
        `opened`: the events start() committed with a new saga (its whole log)."""
        try:
            if saga.status == L.RUNNING:
                saga = self._forward(saga, opened)
            if saga.status == L.COMPENSATING:
                saga = self._compensate(saga)
            return saga
        finally:
            # Every path ends with a commit that takes them; after an exception they
            # are dropped, as a crash would drop them (the step is rerun on resume).
            self._deferred.pop(saga.id, None)
            try:  # a no-op unless an error left the saga unfinished
                self.log.release(saga.id)
            except Exception:
                logger.exception("could not let go of saga %s", saga.id)

    resume = run  # an unfinished saga continues exactly where its log stops

    def resume_all(self, *, force: bool = False
                   ) -> tuple[list[L.SagaRecord], list[L.SagaBusy]]:
        """Every unfinished saga, continued: (the sagas driven, the ones another live
        process drives and were left to it)."""
        done: list[L.SagaRecord] = []
        busy: list[L.SagaBusy] = []
        for status in L.UNFINISHED:
            for saga in self.log.list(status, 10_000):
                try:
                    done.append(self.run(saga.id, force=force))
                except L.SagaBusy as exc:
                    busy.append(exc)
        return done, busy

    def outage_stuck(self, older_than: float, now: float | None = None) -> list[L.SagaRecord]:
        """Stuck sagas a worker may pick up again on its own: the failure that stopped
        them may pass (an outage), they were not interrupted by a reboot (those wait for
        a person, see retry), and they have been stuck for `older_than` seconds."""
        now = time.time() if now is None else now
        found = []
        for saga in self.log.list(L.STUCK, 10_000):
            if saga.after_reboot or now - saga.updated_at < older_than:
                continue
            failures = [e for e in self.log.events(saga.id)
                        if e.state in (L.FAILED, L.COMPENSATION_FAILED)]
            if failures and failures[-1].error.get("retryable", False):
                found.append(saga)
        return found

    def sweep(self, *, retry_stuck_after: float = 60.0) -> tuple[list[L.SagaRecord],
                                                                 list[L.SagaRecord]]:
        """One pass of a worker: continue every unfinished saga whose driver is gone, and
        retry the sagas stuck by an outage for `retry_stuck_after` s. Returns (resumed,
        retried); sagas a live process drives are left to it."""
        resumed, _ = self.resume_all()
        retried = []
        for saga in self.outage_stuck(retry_stuck_after):
            try:
                retried.append(self.retry(saga.id))
            except L.SagaBusy:
                continue  # someone (an operator's retry) took it meanwhile
        return resumed, retried

    def retry(self, saga_id: str, *, force: bool = False) -> L.SagaRecord:
        """Pick up a stuck saga: forward when its pivot succeeded, else compensate."""
        saga = self.log.get(saga_id)
        if saga.status != L.STUCK:
            return self.run(saga.id, force=force)
        saga = self.log.claim(saga.id, force=force)
        try:
            forward = self._pivot_done(saga) or (saga.after_reboot and not self._refused(saga))
            status = L.RUNNING if forward else L.COMPENSATING
            # Compensating again: the saga fails for what failed first, not for the
            # compensation that got it stuck (that stays in its history).
            saga = self._set_status(saga, status,
                                    error=None if forward else self._first_failure(saga))
        except BaseException:
            self.log.release(saga.id)
            raise
        return self._drive(saga)

    def abort(self, saga_id: str, *, force: bool = False) -> L.SagaRecord:
        """An operator's way out of a stuck saga whose failing step will never pass:
        compensate, in reverse, every step the log records as applied (past the pivot
        too, where a step has a compensation). Only a stuck saga can be aborted
        (SagaNotAbortable otherwise). A saga flagged `after_reboot` may have applied
        steps its log lost; those are not undone, which the caller must accept first."""
        saga = self.log.get(saga_id)
        if saga.status != L.STUCK:
            raise SagaNotAbortable(saga, f"saga {saga.id} is {saga.status}; only a stuck "
                                         f"saga can be aborted")
        saga = self.log.claim(saga.id, force=force)
        try:
            saga = self._set_status(saga, L.COMPENSATING,
                                    error=f"aborted by an operator ({saga.error})")
        except BaseException:
            self.log.release(saga.id)
            raise
        return self._drive(saga)

    # -- forward -----------------------------------------------------------------------

    def _forward(self, saga: L.SagaRecord,
                 opened: list[L.StepEvent] | None = None) -> L.SagaRecord:
        steps = steps_of(saga.definition)
        events = self.log.events(saga.id) if opened is None else opened
        last = _last_forward(events)
        context, results = self._context(saga, events)
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
                return self._set_status(saga, L.COMPENSATING, error=event.error["message"])
            if opened and event is opened[-1] and event.state == L.STARTED:
                # start() logged this attempt's start with the saga: run it now.
                failure = self._attempts(saga, step, context, "forward", event.attempt,
                                         begun=True, results=results)
            else:
                failure = self._attempts(saga, step, context, "forward",
                                         begun[step.name] + 1, results=results)
            if failure is None:
                pivot_passed = pivot_passed or step.pivot
                continue
            reason = f"{step.name} failed: {failure.message}"
            if pivot_passed:
                return self._stuck(saga, f"{reason} (after the pivot; retry forward with "
                                         f"`shopctl saga retry {saga.id}`)")
            if saga.after_reboot and failure.retryable:
                # The machine went down under this saga and its log may have lost its last
                # records: steps after this one may have applied unrecorded, and undoing
                # only the recorded ones would leave those. Forward is safe, so wait for it.
                return self._stuck(saga, f"{reason} (the saga was interrupted by a reboot "
                                         f"and its log may lack steps that ran, so it is not "
                                         f"compensated; retry forward with "
                                         f"`shopctl saga retry {saga.id}`)")
            return self._set_status(saga, L.COMPENSATING, error=reason)
        return self._set_status(saga, L.COMPLETED,
                                event=(COMPLETED_EVENT, {"context": context}))

    # -- compensation ------------------------------------------------------------------

    def _compensate(self, saga: L.SagaRecord) -> L.SagaRecord:
        events = self.log.events(saga.id)
        last_fwd = _last_forward(events)
        last_comp = _last_compensation(events)
        context, results = self._context(saga, events)
        begun = Counter(e.step for e in events if e.state == L.COMPENSATING_STEP)
        started = Counter(e.step for e in events if e.state == L.STARTED)
        for step in reversed(steps_of(saga.definition)):
            fwd = last_fwd.get(step.name)
            if step.compensate is None or fwd is None:
                continue
            if fwd.state == L.FAILED and not fwd.error.get("retryable", True):
                continue  # refused for good: the step applied nothing
            if last_comp.get(step.name) == L.COMPENSATED_STEP:
                continue
            if fwd.state != L.SUCCEEDED and not last_comp.get(step.name):
                # Outcome unknown: repeat the call with its key, under the step's own
                # retry policy, to learn what it did (an outage may still be passing:
                # a compensation built without the step's result could only be refused).
                unknown = self._attempts(saga, step, context, "forward",
                                         started[step.name] + 1, settling=True,
                                         results=results)
                if unknown is not None and not unknown.retryable:
                    continue  # refused: the step applied nothing, so nothing to undo
                # Still unknown: compensate anyway. The contract asks a compensation to
                # undo whatever its forward key did, or nothing, and to make a late
                # forward call with that key fail.
            failure = self._attempts(saga, step, context, "compensate", begun[step.name] + 1,
                                     results=results)
            if failure is not None:
                return self._stuck(saga, f"compensation {step.compensate} of {step.name} "
                                         f"failed: {failure.message} (saga failed because: "
                                         f"{saga.error})")
        return self._set_status(saga, L.COMPENSATED,
                                event=(COMPENSATED_EVENT, {"reason": saga.error,
                                                           "context": context}))

    # -- one step, with retries ----------------------------------------------------------

    def _attempts(self, saga: L.SagaRecord, step: StepDef, context: dict[str, Any],
                  phase: str, first: int, begun: bool = False, settling: bool = False,
                  results: dict[str, Any] | None = None) -> StepFailure | None:
        """Run one step (or its compensation) until it succeeds, fails for good or runs
        out of attempts, numbering attempts from `first` (1 + the attempts already
        logged; with `begun`, attempt `first` is logged as started already). Merges a
        forward result into `context`; None on success. `settling`: a forward repeat
        made while compensating (no chaos injection: it only learns what happened)."""
        forward = phase == "forward"
        begin, done, failed = ((L.STARTED, L.SUCCEEDED, L.FAILED) if forward else
                               (L.COMPENSATING_STEP, L.COMPENSATED_STEP, L.COMPENSATION_FAILED))
        call_name = step.call if forward else step.compensate
        spec = step.call_spec if forward else step.compensate_spec
        results = {} if results is None else results
        failure: StepFailure | None = None
        began, waited = time.monotonic(), 0.0
        attempt = first - 1
        while True:
            attempt += 1
            if not (begun and attempt == first):
                self._record(saga, step.name, begin, attempt)
            started = time.monotonic()
            try:
                if forward and not settling and saga.fail_at == step.name:
                    raise StepFailure(f"injected failure at {step.name} (--fail-at)",
                                      retryable=False, code="INJECTED")
                call = StepCall(saga.id, step.name, phase, step.timeout, dict(context),
                                reason=None if forward else saga.error, saga=saga.name,
                                input=saga.input, spec=spec, results=dict(results))
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
                    results[step.name] = result or {}
                return None
            self._record(saga, step.name, failed, attempt,
                         duration=time.monotonic() - started, error=failure.to_dict())
            if not failure.retryable:
                return failure
            # Full jitter over the upper half: concurrent sagas hitting the same outage
            # do not come back in lockstep.
            wait = min(step.max_backoff, step.backoff * 2 ** (attempt - first))
            wait *= self.jitter()
            # Time spent so far: the clock's, or the waits when `sleep` is a test's fake.
            spent = max(time.monotonic() - began, waited)
            out_of_retries = step.retries is not None and attempt - first >= step.retries
            if out_of_retries or spent + wait >= step.deadline:
                if attempt > first:
                    failure.message += (f" (kept failing for {spent:.0f}s, "
                                        f"{attempt - first + 1} attempts)")
                return failure
            self.sleep(wait)
            waited += wait

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

    def _set_status(self, saga: L.SagaRecord, status: str, error: str | None = None,
                    event: tuple[str, dict[str, Any]] | None = None) -> L.SagaRecord:
        """Commit a saga status (with the transitions deferred so far and, when given,
        the outcome event it announces, payload completed with the saga's id and name);
        returns the saga as the log now holds it."""
        now = time.time()
        outbox = () if event is None else (
            (event_type(saga.name, event[0]),
             {"saga_id": saga.id, "saga": saga.name, "outcome": event[0], **event[1]}),)
        self._commit(saga, [], status=status, error=error, outbox=outbox, at=now)
        if outbox and self.publisher is not None:
            self.publisher.notify()
        return dataclasses.replace(saga, status=status, updated_at=now,
                                   error=saga.error if error is None else error)

    def _commit(self, saga: L.SagaRecord, transitions: list[L.Transition],
                **commit: Any) -> None:
        pending = self._deferred.pop(saga.id, [])
        both = pending + transitions
        # The pivot's success decides that the saga only goes forward: it is on disk
        # before any step after it runs (statuses are, by the log's own rule).
        durable = any(t.state == L.SUCCEEDED and t.step in _pivots(saga) for t in both)
        self._announce(self.log.commit(saga.id, both, durable=durable, **commit))

    def _announce(self, events: list[L.StepEvent]) -> None:
        """What follows each committed transition: the live view, and the crash hook."""
        for event in events:
            if self.on_event is not None:
                self.on_event(event)
            if self.crash_at == f"{event.step}:{event.state}":
                os.kill(os.getpid(), signal.SIGKILL)

    def _context(self, saga: L.SagaRecord, events: list[L.StepEvent] | None = None
                 ) -> tuple[dict[str, Any], dict[str, Any]]:
        """(the input plus every forward result logged so far, in log order; each step's
        own latest result)."""
        context = dict(saga.input)
        results: dict[str, Any] = {}
        for event in self.log.events(saga.id) if events is None else events:
            if event.state == L.SUCCEEDED and isinstance(event.result, dict):
                context.update(event.result)
                results[event.step] = event.result
        return context, results

    def _first_failure(self, saga: L.SagaRecord) -> str | None:
        """Why the saga began to compensate: the forward step that failed last, as the
        engine words it; None when no forward step failed (an abort)."""
        failed = [e for e in _last_forward(self.log.events(saga.id)).values()
                  if e.state == L.FAILED]
        if not failed:
            return None
        last = max(failed, key=lambda e: e.seq)
        return f"{last.step} failed: {last.error.get('message', '')}"

    def _refused(self, saga: L.SagaRecord) -> bool:
        """Whether a step before the pivot was refused for good (it applied nothing)."""
        return any(e.state == L.FAILED and not e.error.get("retryable", True)
                   for e in _last_forward(self.log.events(saga.id)).values())

    def _pivot_done(self, saga: L.SagaRecord) -> bool:
        last = _last_forward(self.log.events(saga.id))
        return any(s.pivot and getattr(last.get(s.name), "state", None) == L.SUCCEEDED
                   for s in steps_of(saga.definition))

    def _stuck(self, saga: L.SagaRecord, reason: str) -> L.SagaRecord:
        return self._set_status(saga, L.STUCK, error=reason,
                                event=(STUCK_EVENT, {"reason": reason}))


def _pivots(saga: L.SagaRecord) -> set[str]:
    return {s["name"] for s in saga.definition["steps"] if s.get("pivot")}


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
