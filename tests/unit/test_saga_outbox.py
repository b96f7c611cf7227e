"""The outbox publisher's logic, with a fake send: events leave the log at least once,
failures back off and retry, and a flush never waits for what it cannot send."""

from __future__ import annotations

import time

import pytest

from shopctl.saga import log as L
from shopctl.saga.outbox import OutboxPublisher


class FlakySend:
    """Fails the first `failures` sends, then records every message."""

    def __init__(self, failures: int = 0):
        self.failures = failures
        self.sent: list[tuple[str, dict]] = []

    def __call__(self, event_type: str, message: dict) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("broker unreachable")
        self.sent.append((event_type, message))


@pytest.fixture
def log(open_saga_log):
    """The log of each backend (SQLite, PostgreSQL): every test taking it runs on both."""
    with open_saga_log() as saga_log:
        yield saga_log


def finished_saga(log, kind: str = "order.completed") -> str:
    saga, _ = log.create("order", {}, {"steps": []})
    log.commit(saga.id, [], status=L.COMPLETED, outbox=[(kind, {"saga_id": saga.id})])
    return saga.id


def test_events_left_by_an_earlier_process_are_sent_and_marked(log, open_saga_log,
                                                                monkeypatch):
    monkeypatch.setattr(L, "OUTBOX_LEASE", 0.0)  # the writer's lease on them has run out
    with open_saga_log() as earlier:
        ids = [finished_saga(earlier) for _ in range(3)]
    send = FlakySend()
    publisher = OutboxPublisher(log, send).start()
    assert publisher.close(timeout=5) == 0
    assert [m["saga_id"] for _, m in send.sent] == ids
    assert all(e.published_at for i in ids for e in log.outbox(i))


def test_a_notified_event_is_sent_without_waiting_for_the_poll(log):
    send = FlakySend()
    publisher = OutboxPublisher(log, send, poll=60).start()
    try:
        saga_id = finished_saga(log, "order.compensated")
        publisher.notify()
        assert publisher.flush(timeout=10) == 0  # well before the next poll
        assert send.sent == [("order.compensated", {"saga_id": saga_id,
                                               "event_id": log.outbox(saga_id)[0].event_id})]
    finally:
        publisher.close()


def test_a_failed_send_is_kept_and_retried_after_a_backoff(log):
    saga_id = finished_saga(log)
    send = FlakySend(failures=1)
    publisher = OutboxPublisher(log, send, poll=0.05, backoff=0.2).start()
    try:
        assert publisher.flush(timeout=5) == 1  # returns at the failure: nothing to wait for
        assert "broker unreachable" in publisher.last_error
        (event,) = log.outbox(saga_id)
        assert event.published_at is None and event.attempts == 1
        deadline = time.monotonic() + 5
        while not send.sent and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [m["saga_id"] for _, m in send.sent] == [saga_id]
    finally:
        publisher.close()
    assert log.unpublished() == 0


def test_close_with_the_broker_down_keeps_the_events_for_the_next_publisher(log,
                                                                          open_saga_log):
    saga_id = finished_saga(log)
    down = OutboxPublisher(log, FlakySend(failures=10**6), backoff=0.0)
    assert down.start().close(timeout=5) == 1
    with open_saga_log() as later:  # the next process, once the backoff is over
        send = FlakySend()
        assert OutboxPublisher(later, send).start().close(timeout=5) == 0
    assert [m["saga_id"] for _, m in send.sent] == [saga_id]


def test_sixteen_publishers_in_one_process_never_misuse_the_shared_writer(open_saga_log,
                                                                         caplog):
    """Each thread has its own SagaLog and publisher on one file, so they share one write
    connection; none may leave a statement busy for another (SQLite's "bad parameter or
    other API misuse"), and every event goes out once and is marked published."""
    import logging
    import threading

    caplog.set_level(logging.WARNING, logger="shopctl.saga.outbox")
    sent: list[str] = []
    lock = threading.Lock()

    def send(_: str, message: dict) -> None:
        time.sleep(0.0005)  # a broker's round trip: publishers overlap as they do live
        with lock:
            sent.append(message["saga_id"])

    made: list[str] = []
    errors: list[BaseException] = []
    gate = threading.Barrier(16)

    def worker() -> None:
        try:
            with open_saga_log() as log:
                publisher = OutboxPublisher(log, send, poll=0.01).start()
                gate.wait(timeout=30)
                try:
                    for _ in range(250):
                        saga_id = finished_saga(log)
                        with lock:
                            made.append(saga_id)
                        publisher.notify()
                finally:
                    publisher.close(timeout=30)
        except BaseException as exc:  # reported below, never lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    misuse = [r.getMessage() for r in caplog.records if "misuse" in r.getMessage()]
    assert misuse == []
    assert sorted(made) == sorted(set(sent)) and len(made) == 4000
    with open_saga_log() as log:
        assert log.unpublished() == 0
    assert len(sent) == len(set(sent)), "an event marked published was sent again"
