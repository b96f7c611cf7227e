"""The saga log: durable settings, idempotency keys, ordered step events."""

from __future__ import annotations

from shopctl.saga import log as L


def test_wal_and_full_sync(tmp_path):
    with L.SagaLog(tmp_path / "saga.db") as log:
        assert log._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert log._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_create_is_idempotent_per_key_and_survives_reopen(tmp_path):
    with L.SagaLog(tmp_path / "saga.db") as log:
        first, created = log.create("order", {"a": 1}, {"steps": []}, idempotency_key="k")
        log.record(first.id, "s", L.STARTED, 1)
    with L.SagaLog(tmp_path / "saga.db") as log:
        again, created_again = log.create("order", {"a": 2}, {"steps": []},
                                          idempotency_key="k")
        assert created and not created_again
        assert again.id == first.id and again.input == {"a": 1}
        assert [e.state for e in log.events(first.id)] == [L.STARTED]


def test_events_keep_order_results_and_errors(tmp_path):
    with L.SagaLog(tmp_path / "saga.db") as log:
        saga, _ = log.create("order", {}, {"steps": []})
        log.record(saga.id, "a", L.STARTED, 1)
        log.record(saga.id, "a", L.FAILED, 1, duration=0.5, error={"message": "x"})
        log.record(saga.id, "a", L.SUCCEEDED, 2, result={"order_id": 3})
        events = log.events(saga.id)
        assert [e.seq for e in events] == [1, 2, 3]
        assert events[1].error == {"message": "x"} and events[2].result == {"order_id": 3}


def test_list_by_status_and_prefix_lookup(tmp_path):
    with L.SagaLog(tmp_path / "saga.db") as log:
        a, _ = log.create("order", {}, {"steps": []})
        b, _ = log.create("order", {}, {"steps": []})
        log.set_status(b.id, L.STUCK, error="why")
        assert [s.id for s in log.list(L.STUCK)] == [b.id]
        assert log.get(b.id[:10]).error == "why"
        assert {s.id for s in log.list()} == {a.id, b.id}
