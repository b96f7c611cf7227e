"""The saga engine's logic with fake actions: pivot, compensation, retries, recovery."""

from __future__ import annotations

import pytest

from shopctl.saga import log as L
from shopctl.saga.actions import StepCall, StepFailure
from shopctl.saga.engine import Engine
from tests.saga_backends import as_if_driven_before_a_reboot

DEFINITION = {
    "name": "order",
    "kinds": {"orders": "nameko", "inventory": "grpc", "payments": "fastapi"},
    "steps": [
        {"name": "create_order", "call": "orders.create_order",
         "compensate": "orders.cancel_order", "retries": 2, "backoff": 0.01},
        {"name": "reserve_stock", "call": "inventory.reserve_stock",
         "compensate": "inventory.release_stock", "retries": 2, "backoff": 0.01},
        {"name": "charge", "call": "payments.charge", "compensate": "payments.refund",
         "pivot": True, "timeout": 5, "retries": 2, "backoff": 0.01},
        {"name": "ship", "call": "orders.ship_order", "retries": 3, "backoff": 0.01},
    ],
}
INPUT = {"user_id": "u1", "items": [{"sku": "A", "qty": 1, "unit_price_cents": 100}]}


class FakeActions:
    """Records calls; `script[call]` is a list of outcomes (dict result or StepFailure),
    consumed one per call; the last one repeats."""

    def __init__(self, **script):
        self.script = {k.replace("__", "."): v for k, v in script.items()}
        self.calls: list[tuple[str, StepCall]] = []

    def run(self, call: str, step_call: StepCall) -> dict:
        self.calls.append((call, step_call))
        outcomes = self.script.get(call, [{"ok": call}])
        outcome = outcomes.pop(0) if len(outcomes) > 1 else outcomes[0]
        if isinstance(outcome, Exception):
            raise outcome
        if call == "orders.create_order":
            return {"order_id": 7, "total_cents": 100}
        return outcome

    def names(self) -> list[str]:
        return [c for c, _ in self.calls]


@pytest.fixture
def log(open_saga_log):
    """The log of each backend (SQLite, PostgreSQL): every test taking it runs on both."""
    with open_saga_log() as saga_log:
        yield saga_log


class CountingPublisher:
    def __init__(self):
        self.wakeups = 0

    def notify(self) -> None:
        self.wakeups += 1


def engine(log, actions, publisher=None):
    return Engine(log, actions, sleep=lambda _: None, publisher=publisher)


def outcome_events(log, saga) -> list[tuple[str, dict]]:
    return [(e.event_type, e.payload) for e in log.outbox(saga.id)]


FORWARD = ["orders.create_order", "inventory.reserve_stock", "payments.charge",
           "orders.ship_order"]


def test_happy_path_completes_and_queues_its_event_with_the_status(log):
    actions, publisher = FakeActions(), CountingPublisher()
    saga, created = engine(log, actions, publisher).start("order", DEFINITION, INPUT)
    assert created and saga.status == L.COMPLETED
    assert log.get(saga.id).status == L.COMPLETED and saga.updated_at >= saga.created_at
    assert actions.names() == FORWARD
    ((kind, payload),) = outcome_events(log, saga)
    assert kind == "order.completed" and payload["saga_id"] == saga.id
    assert payload["context"]["order_id"] == 7
    assert publisher.wakeups == 1  # woken once, after the commit
    # Later steps see the results of earlier ones, and each call has its own stable key.
    charge = actions.calls[2][1]
    assert charge.context["order_id"] == 7 and charge.key == f"saga-{saga.id}-charge"


def test_log_records_each_transition(log):
    saga, _ = engine(log, FakeActions()).start("order", DEFINITION, INPUT)
    states = [(e.step, e.state) for e in log.events(saga.id)]
    assert states[:2] == [("create_order", L.STARTED), ("create_order", L.SUCCEEDED)]
    assert len(states) == 8


@pytest.mark.parametrize("fail_at, compensations", [
    ("create_order", []),
    ("reserve_stock", ["orders.cancel_order"]),
    ("charge", ["inventory.release_stock", "orders.cancel_order"]),
])
def test_fail_at_compensates_exactly_the_completed_steps(log, fail_at, compensations):
    actions = FakeActions()
    saga, _ = engine(log, actions).start("order", DEFINITION, INPUT, fail_at=fail_at)
    assert saga.status == L.COMPENSATED
    assert "injected" in saga.error
    done = FORWARD[:[s["name"] for s in DEFINITION["steps"]].index(fail_at)]
    assert actions.names() == done + compensations
    ((kind, payload),) = outcome_events(log, saga)
    assert kind == "order.compensated" and "injected" in payload["reason"]


def test_fail_after_pivot_retries_forward_then_sticks(log):
    actions = FakeActions(orders__ship_order=[StepFailure("down", retryable=True)])
    saga, _ = engine(log, actions).start("order", DEFINITION, INPUT)
    assert saga.status == L.STUCK and "after the pivot" in saga.error
    assert actions.names().count("orders.ship_order") == 4  # 1 + 3 retries
    assert "payments.refund" not in actions.names()  # never compensated after the pivot


def test_non_retryable_compensates_at_once_without_retries(log):
    actions = FakeActions(inventory__reserve_stock=[
        StepFailure("out of stock", retryable=False, code="FAILED_PRECONDITION")])
    saga, _ = engine(log, actions).start("order", DEFINITION, INPUT)
    assert saga.status == L.COMPENSATED
    # The refused reserve applied nothing, so only the order is cancelled.
    assert actions.names() == ["orders.create_order", "inventory.reserve_stock",
                               "orders.cancel_order"]


def test_retryable_failure_is_retried_then_succeeds(log):
    actions = FakeActions(payments__charge=[StepFailure("503", retryable=True), {"c": 1}])
    saga, _ = engine(log, actions).start("order", DEFINITION, INPUT)
    assert saga.status == L.COMPLETED
    assert actions.names().count("payments.charge") == 2
    keys = {c.key for name, c in actions.calls if name == "payments.charge"}
    assert len(keys) == 1  # a retry repeats the same idempotency key


def test_exhausted_retries_before_pivot_compensate_the_uncertain_step(log):
    actions = FakeActions(payments__charge=[StepFailure("timeout", retryable=True)])
    saga, _ = engine(log, actions).start("order", DEFINITION, INPUT)
    assert saga.status == L.COMPENSATED
    # A timed-out charge may have applied: it is repeated once more with its key to
    # learn what it did (still timing out here), then refunded anyway.
    assert actions.names()[-3:] == ["payments.refund", "inventory.release_stock",
                                    "orders.cancel_order"]


def test_failing_compensation_makes_the_saga_stuck_and_retry_finishes_it(log):
    actions = FakeActions(inventory__release_stock=[StepFailure("down", retryable=True)])
    saga, _ = engine(log, actions).start("order", DEFINITION, INPUT, fail_at="charge")
    assert saga.status == L.STUCK and "release_stock" in saga.error
    assert log.list(L.STUCK)[0].id == saga.id
    assert [kind for kind, _ in outcome_events(log, saga)] == ["order.stuck"]
    actions.script["inventory.release_stock"] = [{"released": True}]
    saga = engine(log, actions).retry(saga.id)
    assert saga.status == L.COMPENSATED and log.get(saga.id).status == L.COMPENSATED
    assert actions.names()[-1] == "orders.cancel_order"
    # Stuck, then compensated: both outcomes are announced, in that order.
    assert [kind for kind, _ in outcome_events(log, saga)] == ["order.stuck", "order.compensated"]
    # It failed because of the charge, not because a compensation once failed: that
    # reason stays with the stuck event and the timeline.
    assert saga.error.startswith("charge failed: injected failure")
    assert outcome_events(log, saga)[-1][1]["reason"] == saga.error
    assert "release_stock" in outcome_events(log, saga)[0][1]["reason"]


def test_same_idempotency_key_returns_the_first_saga(log):
    actions = FakeActions()
    first, created1 = engine(log, actions).start("order", DEFINITION, INPUT,
                                                 idempotency_key="k")
    second, created2 = engine(log, actions).start("order", DEFINITION, INPUT,
                                                  idempotency_key="k")
    assert created1 and not created2 and first.id == second.id
    assert actions.names() == FORWARD


def _interrupted(log, upto: int, state: str):
    """A saga whose process died after logging `state` of step number `upto`."""
    saga, _ = log.create("order", INPUT, DEFINITION)
    for step in DEFINITION["steps"][:upto]:
        log.record(saga.id, step["name"], L.STARTED, 1)
        result = {"order_id": 7, "total_cents": 100} if step["name"] == "create_order" else {}
        log.record(saga.id, step["name"], L.SUCCEEDED, 1, result=result)
    log.record(saga.id, DEFINITION["steps"][upto]["name"], state, 1,
               error={"message": "no", "retryable": False} if state == L.FAILED else None)
    log.release(saga.id)  # its driver is gone
    return saga


def test_resume_reruns_the_interrupted_step_with_the_same_key(log):
    saga = _interrupted(log, 2, L.STARTED)
    actions = FakeActions()
    done = engine(log, actions).resume(saga.id)
    assert done.status == L.COMPLETED
    assert actions.names() == ["payments.charge", "orders.ship_order"]
    assert actions.calls[0][1].key == f"saga-{saga.id}-charge"
    assert actions.calls[1][1].context["order_id"] == 7


def test_resume_after_a_final_failure_compensates(log):
    saga = _interrupted(log, 2, L.FAILED)
    actions = FakeActions()
    done = engine(log, actions).resume(saga.id)
    assert done.status == L.COMPENSATED
    assert actions.names() == ["inventory.release_stock", "orders.cancel_order"]


def test_resume_all_skips_finished_sagas(log):
    finished, _ = engine(log, FakeActions()).start("order", DEFINITION, INPUT)
    open_saga = _interrupted(log, 1, L.SUCCEEDED)
    results, busy = engine(log, FakeActions()).resume_all()
    assert [s.id for s in results] == [open_saga.id] and busy == []
    assert log.get(finished.id).status == L.COMPLETED


def test_definition_snapshot_is_used_not_the_current_config(log):
    saga, _ = log.create("order", INPUT, {**DEFINITION, "steps": DEFINITION["steps"][:1]})
    log.release(saga.id)
    actions = FakeActions()
    assert engine(log, actions).run(saga.id).status == L.COMPLETED
    assert actions.names() == ["orders.create_order"]


def test_unknown_fail_at_is_refused(log):
    from shopctl.errors import UsageError

    with pytest.raises(UsageError, match="names no step"):
        engine(log, FakeActions()).start("order", DEFINITION, INPUT, fail_at="nope")


def test_a_success_is_committed_with_the_next_transition(log):
    commits, seen = [], []
    original = log.commit

    def counting_commit(saga_id, transitions, **kw):
        commits.append([(t.step, t.state) for t in transitions] + [kw.get("status")])
        return original(saga_id, transitions, **kw)

    log.commit = counting_commit
    eng = Engine(log, FakeActions(), sleep=lambda _: None, on_event=seen.append)
    saga, _ = eng.start("order", DEFINITION, INPUT)
    assert saga.status == L.COMPLETED
    # create + first start in one commit, then one commit per step boundary
    assert commits == [
        [("create_order", L.SUCCEEDED), ("reserve_stock", L.STARTED), None],
        [("reserve_stock", L.SUCCEEDED), ("charge", L.STARTED), None],
        [("charge", L.SUCCEEDED), ("ship", L.STARTED), None],
        [("ship", L.SUCCEEDED), L.COMPLETED],
    ]
    # the live view still sees every transition, in log order
    assert [(e.seq, e.step, e.state) for e in seen] == [
        (e.seq, e.step, e.state) for e in log.events(saga.id)]
    assert len(seen) == 8


def test_a_failure_is_committed_at_once(log):
    commits = []
    original = log.commit
    log.commit = lambda saga_id, transitions, **kw: (
        commits.append([t.state for t in transitions]) or original(saga_id, transitions, **kw))
    actions = FakeActions(payments__charge=[StepFailure("503", retryable=True), {"c": 1}])
    engine(log, actions).start("order", DEFINITION, INPUT)
    assert [L.FAILED] in commits  # alone, before the backoff and the retry


def test_under_normal_only_the_decisions_are_synced(tmp_path):
    """Creation, the pivot's success and every status reach the disk before the next
    action; the other transitions are committed (crash-safe) without waiting for it."""
    with L.SagaLog(tmp_path / "saga.db", synchronous="NORMAL") as log:
        synced: list[bool] = []
        run = log._writer.run

        def spy(work, fsync=False, durable=True):
            synced.append(fsync)
            return run(work, fsync=fsync, durable=durable)

        log._writer.run = spy
        engine(log, FakeActions()).start("order", DEFINITION, INPUT)
        # create+start, create_order ok+reserve, reserve ok+charge, charge ok+ship, done
        assert synced == [True, False, False, True, True]
        synced.clear()
        engine(log, FakeActions()).start("order", DEFINITION, INPUT, fail_at="charge")
        # creation, COMPENSATING, COMPENSATED; not the failure or the undo steps
        assert synced[0] and synced[-1] and sum(synced) == 3 and len(synced) > 3


def _after_reboot(log, saga) -> None:
    """As if the saga's driver ran in an earlier boot of this machine (PostgreSQL: of
    the database server)."""
    as_if_driven_before_a_reboot(log, saga.id)


def test_after_a_reboot_a_step_that_keeps_failing_waits_instead_of_compensating(log):
    saga = _interrupted(log, 1, L.STARTED)  # its last records: reserve_stock started
    _after_reboot(log, saga)
    actions = FakeActions(inventory__reserve_stock=[StepFailure("down", retryable=True)])
    stuck = engine(log, actions).resume(saga.id)
    assert stuck.status == L.STUCK and stuck.after_reboot and "reboot" in stuck.error
    assert "orders.cancel_order" not in actions.names()  # nothing undone blind
    actions.script["inventory.reserve_stock"] = [{"reserved": True}]
    done = engine(log, actions).retry(saga.id)
    assert done.status == L.COMPLETED  # retry goes forward, not into compensation
    assert actions.names()[-3:] == ["inventory.reserve_stock", "payments.charge",
                                    "orders.ship_order"]


def test_a_saga_whose_driver_synced_everything_is_not_flagged_after_a_reboot(open_saga_log):
    with open_saga_log(synchronous="FULL") as full:
        saga = _interrupted(full, 1, L.STARTED)
        full.claim(saga.id)  # driven by a FULL process...
        _after_reboot(full, saga)  # ...that the machine lost
        full.release(saga.id)
    with open_saga_log() as log:  # NORMAL, after the reboot
        assert not log.claim(saga.id).after_reboot  # FULL lost nothing: no need to wait


def test_after_a_reboot_a_refusal_still_compensates_what_ran(log):
    saga = _interrupted(log, 1, L.STARTED)
    _after_reboot(log, saga)
    actions = FakeActions(inventory__reserve_stock=[StepFailure("out of stock",
                                                                retryable=False)])
    done = engine(log, actions).resume(saga.id)
    # A refused step applied nothing, so nothing after it ran: the log is complete.
    assert done.status == L.COMPENSATED
    assert actions.names() == ["inventory.reserve_stock", "orders.cancel_order"]


# -- sagas of any name, settling unknown outcomes, abort ------------------------------------

DELIVERY = {
    "name": "delivery",
    "steps": [
        {"name": "book", "call": "shipping.book_slot", "compensate": "shipping.free_slot",
         "retries": 1, "backoff": 0.01},
        {"name": "label", "call": "labels.print", "compensate": "labels.void",
         "pivot": True, "retries": 1, "backoff": 0.01},
        {"name": "notify", "call": "mailer.send", "retries": 0},
    ],
    "actions": {"shipping.book_slot": {"service": "shipping", "action": "book_slot",
                                       "kind": "fastapi", "method": "POST"}},
}


def test_outcome_events_are_named_after_the_saga(log):
    saga, _ = engine(log, FakeActions()).start("delivery", DELIVERY, {"parcel": "p-1"})
    ((kind, payload),) = outcome_events(log, saga)
    assert kind == "delivery.completed"
    assert payload["saga"] == "delivery" and payload["saga_id"] == saga.id
    assert payload["outcome"] == "completed"


def test_calls_carry_the_saga_data_and_the_frozen_contract(log):
    actions = FakeActions(shipping__book_slot=[{"slot": 9}])
    engine(log, actions).start("delivery", DELIVERY, {"parcel": "p-2"})
    book, label = actions.calls[0][1], actions.calls[1][1]
    assert book.saga == "delivery" and book.input == {"parcel": "p-2"}
    assert book.spec["action"] == "book_slot"
    assert label.spec is None  # declared nowhere: the participants resolve it live
    assert label.results == {"book": {"slot": 9}} and label.context["slot"] == 9


def test_an_unknown_outcome_is_settled_and_its_result_feeds_the_compensation(log):
    # book times out twice (retries exhausted), the repeat made while compensating
    # answers with what the first call did, and the compensation sees that result.
    timeout = StepFailure("timeout", retryable=True)
    actions = FakeActions(shipping__book_slot=[timeout, timeout, {"slot": 4}])
    saga, _ = engine(log, actions).start("delivery", DELIVERY, {})
    assert saga.status == L.COMPENSATED
    assert actions.names() == ["shipping.book_slot"] * 3 + ["shipping.free_slot"]
    assert actions.calls[-1][1].context["slot"] == 4
    assert actions.calls[-1][1].phase == "compensate"


def test_a_settling_repeat_that_is_refused_means_nothing_to_undo(log):
    timeout = StepFailure("timeout", retryable=True)
    refused = StepFailure("no such slot", retryable=False)
    actions = FakeActions(shipping__book_slot=[timeout, timeout, refused])
    saga, _ = engine(log, actions).start("delivery", DELIVERY, {})
    assert saga.status == L.COMPENSATED
    assert "shipping.free_slot" not in actions.names()


def test_abort_compensates_a_stuck_saga_past_its_pivot(log):
    actions = FakeActions(mailer__send=[StepFailure("smtp down", retryable=True)])
    saga, _ = engine(log, actions).start("delivery", DELIVERY, {})
    assert saga.status == L.STUCK
    aborted = engine(log, actions).abort(saga.id)
    assert aborted.status == L.COMPENSATED and "aborted by an operator" in aborted.error
    assert actions.names()[-2:] == ["labels.void", "shipping.free_slot"]
    kinds = [kind for kind, _ in outcome_events(log, saga)]
    assert kinds == ["delivery.stuck", "delivery.compensated"]


def test_abort_refuses_a_saga_that_is_not_stuck(log):
    from shopctl.saga.engine import SagaNotAbortable

    saga, _ = engine(log, FakeActions()).start("delivery", DELIVERY, {})
    with pytest.raises(SagaNotAbortable, match="completed"):
        engine(log, FakeActions()).abort(saga.id)
    assert log.get(saga.id).status == L.COMPLETED


# -- retries: until a deadline, with capped, jittered backoff --------------------------------

OUTAGE = {
    "name": "relay",
    "steps": [
        {"name": "hold", "call": "a.hold", "compensate": "a.release", "backoff": 0.5,
         "max_backoff": 4, "deadline": 30},
        {"name": "send", "call": "b.send", "compensate": "b.unsend", "pivot": True,
         "deadline": 30},
        {"name": "note", "call": "c.note", "deadline": 30},
    ],
}


def timed_engine(log, actions):
    """An engine whose sleeps are recorded instead of slept, with a fixed jitter."""
    sleeps: list[float] = []
    return Engine(log, actions, sleep=sleeps.append, jitter=lambda: 1.0), sleeps


def test_an_outage_longer_than_a_few_retries_is_ridden_out_within_the_deadline(log):
    down = StepFailure("connection refused", retryable=True)
    actions = FakeActions(a__hold=[down] * 8 + [{"held": True}])
    engine, sleeps = timed_engine(log, actions)
    saga, _ = engine.start("relay", OUTAGE, {})
    assert saga.status == L.COMPLETED
    assert actions.names().count("a.hold") == 9  # more than the old 3 retries
    assert sleeps == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0, 4.0]  # doubling, capped


def test_a_failure_that_outlasts_the_deadline_compensates_and_says_how_long(log):
    down = StepFailure("broker down", retryable=True)
    actions = FakeActions(b__send=[down])
    engine, sleeps = timed_engine(log, actions)
    saga, _ = engine.start("relay", OUTAGE, {})
    assert saga.status == L.COMPENSATED
    assert "send failed: broker down (kept failing for" in saga.error
    forward = [e for e in log.events(saga.id) if e.step == "send" and e.state == L.FAILED]
    assert 6 <= len(forward) <= 40  # bounded by the deadline, twice (forward, settling)
    assert actions.names()[-2:] == ["b.unsend", "a.release"]  # settled, then undone


def test_a_compensation_is_retried_through_an_outage_too(log):
    down = StepFailure("503 Service Unavailable", retryable=True)
    actions = FakeActions(a__release=[down] * 6 + [{"released": True}])
    engine, _ = timed_engine(log, actions)
    saga, _ = engine.start("relay", OUTAGE, {}, fail_at="send")
    assert saga.status == L.COMPENSATED
    assert actions.names().count("a.release") == 7


def test_jitter_spreads_the_waits_of_sagas_hit_by_the_same_outage(log):
    down = StepFailure("timeout", retryable=True)
    waits = []
    for _ in range(2):
        sleeps: list[float] = []
        engine = Engine(log, FakeActions(a__hold=[down, down, {"held": True}]),
                        sleep=sleeps.append)
        engine.start("relay", OUTAGE, {})
        assert all(0.25 <= w <= 0.5 for w in sleeps[:1]) and len(sleeps) == 2
        waits.append(tuple(sleeps))
    assert waits[0] != waits[1]


def test_explicit_retries_still_cap_the_attempts(log):
    capped = {**OUTAGE, "steps": [{**OUTAGE["steps"][0], "retries": 2}, *OUTAGE["steps"][1:]]}
    actions = FakeActions(a__hold=[StepFailure("down", retryable=True)])
    engine, _ = timed_engine(log, actions)
    saga, _ = engine.start("relay", capped, {})
    # 1 + 2 retries, then the same again to settle its unknown outcome before undoing it
    assert saga.status == L.COMPENSATED and actions.names().count("a.hold") == 6


def test_a_sweep_retries_outage_stuck_sagas_but_not_what_a_person_must_decide(log):
    down = StepFailure("broker down", retryable=True)
    actions = FakeActions(c__note=[down])
    engine, _ = timed_engine(log, actions)
    outage, _ = engine.start("relay", OUTAGE, {})  # past the pivot, kept failing: stuck
    refused = FakeActions(a__release=[StepFailure("no such hold", retryable=False)])
    decided, _ = timed_engine(log, refused)[0].start("relay", OUTAGE, {}, fail_at="send")
    assert (outage.status, decided.status) == (L.STUCK, L.STUCK)
    assert engine.outage_stuck(older_than=3600) == []  # not stuck long enough yet
    actions.script["c.note"] = [{"noted": True}]
    resumed, retried = engine.sweep(retry_stuck_after=0)
    assert resumed == [] and [(s.id, s.status) for s in retried] == [(outage.id, L.COMPLETED)]
    assert log.get(decided.id).status == L.STUCK  # a refused compensation needs a person
