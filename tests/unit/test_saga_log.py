"""The saga log: durable settings, idempotency keys, ordered step events. The tests that
take `open_saga_log` run against SQLite and a real PostgreSQL (tests/saga_backends.py)."""

from __future__ import annotations

import threading
import time

import pytest

from shopctl.saga import log as L
from tests.saga_backends import owner_of


def test_wal_and_normal_sync_by_default_full_on_request(tmp_path):
    with L.SagaLog(tmp_path / "saga.db") as log:
        assert log._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert log._conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    with L.SagaLog(tmp_path / "full.db", synchronous="FULL") as log:
        assert log._conn.execute("PRAGMA synchronous").fetchone()[0] == 2


def test_create_is_idempotent_per_key_and_survives_reopen(open_saga_log):
    with open_saga_log() as log:
        first, created = log.create("order", {"a": 1}, {"steps": []}, idempotency_key="k")
        log.record(first.id, "s", L.STARTED, 1)
    with open_saga_log() as log:
        again, created_again = log.create("order", {"a": 2}, {"steps": []},
                                          idempotency_key="k")
        assert created and not created_again
        assert again.id == first.id and again.input == {"a": 1}
        assert [e.state for e in log.events(first.id)] == [L.STARTED]


def test_events_keep_order_results_and_errors(open_saga_log):
    with open_saga_log() as log:
        saga, _ = log.create("order", {}, {"steps": []})
        log.record(saga.id, "a", L.STARTED, 1)
        log.record(saga.id, "a", L.FAILED, 1, duration=0.5, error={"message": "x"})
        log.record(saga.id, "a", L.SUCCEEDED, 2, result={"order_id": 3})
        events = log.events(saga.id)
        assert [e.seq for e in events] == [1, 2, 3]
        assert events[1].error == {"message": "x"} and events[2].result == {"order_id": 3}


def test_list_by_status_and_prefix_lookup(open_saga_log):
    with open_saga_log() as log:
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


def test_commit_appends_several_transitions_and_a_status_at_once(open_saga_log):
    with open_saga_log() as log:
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


def test_a_transition_moves_updated_at_without_rewriting_the_saga_row(open_saga_log):
    with open_saga_log() as log:
        saga, _ = log.create("order", {}, {"steps": []})
        time.sleep(0.01)
        event = log.record(saga.id, "s", L.STARTED, 1)
        assert log.get(saga.id).updated_at == event.at > saga.created_at
        assert log.list()[0].updated_at == event.at


def test_the_creator_drives_its_saga_until_a_final_status_lets_it_go(open_saga_log):
    with open_saga_log() as log, open_saga_log() as other:
        saga, _ = log.create("order", {}, {"steps": []})
        with pytest.raises(L.SagaBusy, match=saga.id):
            other.claim(saga.id)  # another engine of this process, same file
        assert other.claim(saga.id, force=True).id == saga.id
        log.commit(saga.id, [], status=L.COMPLETED)
        assert owner_of(log, saga.id) is None
        assert other.claim(saga.id).status == L.COMPLETED  # finished: returned as it is


def test_a_released_saga_can_be_claimed_and_an_unknown_one_is_a_key_error(open_saga_log):
    with open_saga_log() as log:
        saga, _ = log.create("order", {}, {"steps": []})
        log.release(saga.id)
        assert log.claim(saga.id).id == saga.id
        with pytest.raises(L.SagaBusy):
            log.claim(saga.id)
        with pytest.raises(KeyError):
            log.claim("nosuchsaga")


def test_a_log_from_before_the_owner_column_is_migrated(tmp_path):
    import sqlite3

    path = tmp_path / "saga.db"
    old = sqlite3.connect(path)
    old.executescript(L._SCHEMA.replace(
        "    error           TEXT,\n    owner           TEXT,\n    owner_sync      TEXT,\n"
        "    after_reboot    INTEGER NOT NULL DEFAULT 0\n", "    error           TEXT\n"))
    old.execute("INSERT INTO sagas VALUES ('a1', 'order', 'running', 'k', '{}',"
                " '{\"steps\": []}', NULL, 1.0, 1.0, NULL)")
    old.commit()
    old.close()
    with L.SagaLog(path) as log:
        assert log.claim("a1").status == L.RUNNING


def test_outbox_events_commit_with_the_status_and_are_leased_then_marked(open_saga_log,
                                                                        monkeypatch):
    with open_saga_log() as log:
        saga, _ = log.create("order", {}, {"steps": []})
        log.commit(saga.id, [], status=L.COMPLETED,
                   outbox=[("order.completed", {"saga_id": saga.id})])
        (fresh,) = log.fresh_events()  # the writer's own publisher sees it at once
        with open_saga_log() as other:
            assert other.fresh_events() == [] and other.claim_events() == []  # leased
    monkeypatch.setattr(time, "time", lambda real=time.time: real() + L.OUTBOX_LEASE)
    with open_saga_log() as log:  # it survives; the writer is gone
        assert log.unpublished() == 1
        (event,) = log.claim_events(lease=30)
        assert event.id == fresh.id
        assert event.message() == {"saga_id": saga.id, "event_id": f"{saga.id}-{event.id}"}
        assert log.claim_events() == []  # leased to the first publisher
        log.event_failed([event.id], "broker down", retry_in=0)
        (again,) = log.claim_events()
        assert again.attempts == 1 and again.last_error == "broker down"
        log.events_published([again.id])
        assert log.unpublished() == 0 and log.claim_events() == []
        (done,) = log.outbox(saga.id)
        assert done.published_at is not None and done.attempts == 2


def test_owner_tokens_tell_a_live_process_from_a_dead_or_unknown_one():
    import subprocess
    import sys

    from shopctl.saga import owner

    assert owner.alive(owner.token()) is True
    gone = subprocess.run([sys.executable, "-c", "from shopctl.saga import owner;"
                           "print(owner.token())"], capture_output=True, text=True, check=True)
    assert owner.alive(gone.stdout.strip()) is False
    host, pid, start, boot = owner.token().split("/")
    assert owner.alive(f"{host}/{pid}/{int(start) + 1}/{boot}") is False  # a recycled pid
    assert owner.alive(f"{host}/{pid}/{start}/0123456789ab") is False  # an earlier boot
    assert owner.earlier_boot(f"{host}/{pid}/{start}/0123456789ab")
    assert not owner.earlier_boot(owner.token())
    assert owner.alive(f"elsewhere.example/{pid}/{start}/{boot}") is None
    assert owner.describe(f"far.example/{pid}/1") == f"process {pid} on host far.example"


def test_a_saga_log_file_this_user_cannot_write_is_a_clear_error():
    """Another user's saga.db (root made it; uid 65534 opens it): one clear error naming
    the file, not sqlite's 'attempt to write a readonly database' traceback."""
    import shutil
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    folder = Path(tempfile.mkdtemp(prefix="shopctl-ro-"))  # in /tmp, reachable by all
    try:
        folder.chmod(0o755)
        db = folder / "saga.db"
        with L.SagaLog(db):
            pass
        code = ("import sys; from shopctl.saga.log import SagaLog; "
                "from shopctl.errors import ProjectStateError\n"
                "try:\n    SagaLog(sys.argv[1])\nexcept ProjectStateError as e:\n"
                "    print(e.message); sys.exit(7)\n")
        done = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                               sys.executable, "-c", code, str(db)], capture_output=True,
                              text=True, timeout=60,
                              env={"PYTHONPATH": str(Path(__file__).resolve().parents[2])})
        assert done.returncode == 7, done.stderr[-2000:]
        assert f"cannot write the saga log {db}" in done.stdout
    finally:
        shutil.rmtree(folder)
