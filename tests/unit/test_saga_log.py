"""The saga log: durable settings, idempotency keys, ordered step events."""

from __future__ import annotations

import threading
import time

import pytest

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


def test_synchronous_is_a_setting_and_normal_still_syncs_the_creation(tmp_path, monkeypatch):
    with L.SagaLog(tmp_path / "a.db", synchronous="normal") as log:
        assert log._conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        saga, _ = log.create("order", {}, {"steps": []})
        assert log._conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # restored
        log.record(saga.id, "s", L.STARTED, 1)
        assert [e.state for e in log.events(saga.id)] == [L.STARTED]
    monkeypatch.setenv(L.SYNC_ENV, "NORMAL")
    with L.SagaLog(tmp_path / "b.db") as log:
        assert log._conn.execute("PRAGMA synchronous").fetchone()[0] == 1
    with pytest.raises(ValueError):
        L.SagaLog(tmp_path / "c.db", synchronous="OFF")


def test_commit_appends_several_transitions_and_a_status_at_once(tmp_path):
    with L.SagaLog(tmp_path / "saga.db") as log:
        saga, created, opened = log.create_with(
            "order", {}, {"steps": []}, [L.Transition("a", L.STARTED, 1)])
        assert created and [(e.seq, e.state) for e in opened] == [(1, L.STARTED)]
        events = log.commit(saga.id, [L.Transition("a", L.SUCCEEDED, 1, result={"x": 1}),
                                      L.Transition("b", L.STARTED, 1)],
                            status=L.COMPENSATING, error="why")
        assert [e.seq for e in events] == [2, 3]
        assert [(e.step, e.state) for e in log.events(saga.id)] == [
            ("a", L.STARTED), ("a", L.SUCCEEDED), ("b", L.STARTED)]
        assert log.get(saga.id).status == L.COMPENSATING and log.get(saga.id).error == "why"


def test_logs_of_one_file_share_a_writer_and_concurrent_writes_all_land(tmp_path):
    logs = [L.SagaLog(tmp_path / "saga.db") for _ in range(8)]
    try:
        assert all(log._writer is logs[0]._writer for log in logs)
        sagas = [log.create("order", {}, {"steps": []})[0] for log in logs]

        def write(log, saga):
            for i in range(30):
                log.record(saga.id, f"s{i}", L.STARTED, 1)

        threads = [threading.Thread(target=write, args=pair)
                   for pair in zip(logs, sagas, strict=True)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for log, saga in zip(logs, sagas, strict=True):
            assert [e.seq for e in log.events(saga.id)] == list(range(1, 31))
    finally:
        for log in logs:
            log.close()
    with L.SagaLog(tmp_path / "saga.db") as log:  # a new writer once all were closed
        assert len(log.list()) == 8


def test_a_failing_write_in_a_group_commit_leaves_the_others_committed(tmp_path):
    with L.SagaLog(tmp_path / "saga.db") as log:
        saga, _ = log.create("order", {}, {"steps": []})
        writer, release, results = log._writer, threading.Event(), {}

        def slow(conn):  # holds the commit in flight while the others queue up
            release.wait(5)

        def bad(conn):
            conn.execute("INSERT INTO step_events (saga_id, seq, step, state, attempt, at)"
                         " VALUES (?, 99, 'x', 'started', 1, 0)", (saga.id,))
            raise ValueError("bad write")

        def run(name, work):
            try:
                results[name] = writer.run(work)
            except ValueError as exc:
                results[name] = exc

        leader = threading.Thread(target=run, args=("slow", slow))
        leader.start()
        while not writer._leading:
            time.sleep(0.001)
        others = [threading.Thread(target=run, args=("bad", bad)),
                  threading.Thread(target=lambda: results.update(
                      good=log.record(saga.id, "b", L.STARTED, 1)))]
        for t in others:
            t.start()
        while len(writer._queue) < 2:
            time.sleep(0.001)
        release.set()
        for t in (leader, *others):
            t.join(5)
        assert isinstance(results["bad"], ValueError)
        assert [(e.seq, e.step) for e in log.events(saga.id)] == [(1, "b")]
