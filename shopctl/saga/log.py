"""The durable saga log: one SQLite database (WAL, synchronous=FULL) per project.

Tables
    sagas(id, name, status, idempotency_key UNIQUE, input, definition, fail_at,
          created_at, updated_at, error)
    step_events(saga_id, seq, step, phase, state, attempt, at, duration, result, error)

Contract: every write is committed (and, with synchronous=FULL, on disk) before the
method returns, so the engine may act on the world only after the log says what it is
about to do. The log is the single source of truth for recovery: `saga resume` reads
nothing else. `input` and `definition` are JSON snapshots taken when the saga started,
so editing shop.yaml never changes a saga already in flight.

Group commit: every SagaLog of a process on the same file shares one write connection
(`_Writer`). A write that finds another commit in flight waits, and the next commit
takes every write queued meanwhile in one transaction, each in its own savepoint, so
N concurrent sagas pay one fsync instead of N. Each caller still returns only once its
own write is committed: the contract above holds for every write. Reads go through a
connection of each SagaLog's own, so they only ever see committed data.

synchronous: FULL by default: every commit is fsynced, so it survives power loss too.
NORMAL (`synchronous=`, or the environment variable SHOPCTL_SAGA_SYNCHRONOUS) fsyncs only
the commit that creates a saga (its row and idempotency key); a transition's commit is
atomic and survives a crash of the process (SIGKILL included: it is in the OS's page
cache), but a power loss or OS crash may take the last transitions before it. The log is
then behind the world, never ahead: resume redoes the steps after the last surviving
transition with the same idempotency keys, and the services answer a redo with what
they did the first time (and refuse a late charge or reserve after a refund or release),
so the saga still ends consistent. What NORMAL must not lose is the saga itself: a lost
row would leave its effects orphaned and let the same --idempotency-key start a second
saga, hence the fsync of the creation.

Several processes may open the same file (a `saga run` next to a `saga resume`);
WAL lets readers go on while one writer commits, and busy_timeout makes writers queue.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

SYNC_ENV = "SHOPCTL_SAGA_SYNCHRONOUS"
SYNC_MODES = ("FULL", "NORMAL")

# Saga statuses.
RUNNING = "running"
COMPENSATING = "compensating"
COMPLETED = "completed"
COMPENSATED = "compensated"
STUCK = "stuck"
STATUSES = (RUNNING, COMPENSATING, COMPLETED, COMPENSATED, STUCK)
UNFINISHED = (RUNNING, COMPENSATING)

# Step event states.
STARTED = "started"
SUCCEEDED = "succeeded"
FAILED = "failed"
COMPENSATING_STEP = "compensating"
COMPENSATED_STEP = "compensated"
COMPENSATION_FAILED = "compensation_failed"
STEP_STATES = (STARTED, SUCCEEDED, FAILED, COMPENSATING_STEP, COMPENSATED_STEP,
               COMPENSATION_FAILED)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sagas (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL,
    status          TEXT NOT NULL,
    idempotency_key TEXT NOT NULL UNIQUE,
    input           TEXT NOT NULL,
    definition      TEXT NOT NULL,
    fail_at         TEXT,
    created_at      REAL NOT NULL,
    updated_at      REAL NOT NULL,
    error           TEXT
);
CREATE INDEX IF NOT EXISTS sagas_by_status ON sagas (status, created_at);
CREATE TABLE IF NOT EXISTS step_events (
    saga_id  TEXT NOT NULL REFERENCES sagas (id),
    seq      INTEGER NOT NULL,
    step     TEXT NOT NULL,
    state    TEXT NOT NULL,
    attempt  INTEGER NOT NULL,
    at       REAL NOT NULL,
    duration REAL,
    result   TEXT,
    error    TEXT,
    PRIMARY KEY (saga_id, seq)
);
"""


@dataclass(frozen=True)
class SagaRecord:
    id: str
    name: str
    status: str
    idempotency_key: str
    input: dict[str, Any]
    definition: dict[str, Any]
    fail_at: str | None
    created_at: float
    updated_at: float
    error: str | None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class StepEvent:
    saga_id: str
    seq: int
    step: str
    state: str
    attempt: int
    at: float
    duration: float | None
    result: Any
    error: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Transition:
    """A step event to append (see SagaLog.commit)."""

    step: str
    state: str
    attempt: int
    duration: float | None = None
    result: Any = None
    error: dict[str, Any] | None = None


class SagaLog:
    """Sagas and their step events in `path`. Thread-safe: writes go through the
    process's shared writer for the file, reads through this log's own connection."""

    def __init__(self, path: Path | str, *, synchronous: str | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        sync = (synchronous or os.environ.get(SYNC_ENV) or "FULL").upper()
        if sync not in SYNC_MODES:
            raise ValueError(f"synchronous must be one of {', '.join(SYNC_MODES)}, got {sync!r}")
        self._writer = _Writer.acquire(self.path, sync)
        self._conn = self._writer.conn  # the write connection (its pragmas are the log's)
        self._read = _open(self.path)
        self._lock = threading.Lock()  # guards self._read
        self._closed = False

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._read.close()
        self._writer.release()

    def __enter__(self) -> SagaLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- sagas -------------------------------------------------------------------------

    def create(self, name: str, input: dict[str, Any], definition: dict[str, Any], *,
               idempotency_key: str | None = None,
               fail_at: str | None = None) -> tuple[SagaRecord, bool]:
        """(saga, created). A known idempotency key returns the first saga, created=False,
        whatever the other arguments say this time."""
        saga, created, _ = self.create_with(name, input, definition, (),
                                            idempotency_key=idempotency_key, fail_at=fail_at)
        return saga, created

    def create_with(self, name: str, input: dict[str, Any], definition: dict[str, Any],
                    transitions: Sequence[Transition], *, idempotency_key: str | None = None,
                    fail_at: str | None = None
                    ) -> tuple[SagaRecord, bool, list[StepEvent]]:
        """create(), and when the saga is new, its first `transitions` in the same
        transaction: (saga, created, the events appended)."""
        for t in transitions:
            assert t.state in STEP_STATES, t.state
        saga_id = uuid.uuid4().hex[:16]
        key = idempotency_key or f"auto-{saga_id}"
        now = time.time()
        input_json, definition_json = json.dumps(input), json.dumps(definition)
        rows = _event_rows(saga_id, 1, now, transitions)

        def work(conn: sqlite3.Connection) -> sqlite3.Row | None:
            row = conn.execute("SELECT * FROM sagas WHERE idempotency_key = ?",
                               (key,)).fetchone()
            if row is None:
                conn.execute(
                    "INSERT INTO sagas (id, name, status, idempotency_key, input, definition,"
                    " fail_at, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (saga_id, name, RUNNING, key, input_json, definition_json, fail_at,
                     now, now),
                )
                if rows:
                    conn.executemany(_INSERT_EVENT, rows)
            return row

        existing = self._writer.run(work, fsync=True)
        if existing is not None:
            return _saga(existing), False, []
        # What get() and events() would read back, without reading it back.
        saga = SagaRecord(id=saga_id, name=name, status=RUNNING, idempotency_key=key,
                          input=json.loads(input_json),
                          definition=json.loads(definition_json), fail_at=fail_at,
                          created_at=now, updated_at=now, error=None)
        return saga, True, _events(saga_id, 1, now, transitions)

    def get(self, saga_id: str) -> SagaRecord:
        """The saga; KeyError when unknown. A unique prefix of an id is accepted."""
        with self._lock:
            rows = self._read.execute("SELECT * FROM sagas WHERE id = ?",
                                      (saga_id,)).fetchall()
            if not rows and saga_id:
                # A range on the primary key, so the prefix look-up uses the index.
                prefix = saga_id.lower()  # ids are lowercase hex
                rows = self._read.execute(
                    "SELECT * FROM sagas WHERE id >= ? AND id < ? ORDER BY id LIMIT 2",
                    (prefix, prefix + "\U0010ffff")).fetchall()
        if len(rows) == 1:
            return _saga(rows[0])
        raise KeyError(saga_id)

    def by_key(self, idempotency_key: str) -> SagaRecord | None:
        with self._lock:
            row = self._read.execute("SELECT * FROM sagas WHERE idempotency_key = ?",
                                     (idempotency_key,)).fetchone()
        return None if row is None else _saga(row)

    def list(self, status: str | None = None, limit: int = 100) -> list[SagaRecord]:
        """Newest first."""
        query, args = "SELECT * FROM sagas", []
        if status:
            query += " WHERE status = ?"
            args.append(status)
        query += " ORDER BY created_at DESC LIMIT ?"
        with self._lock:
            rows = self._read.execute(query, (*args, limit)).fetchall()
        return [_saga(r) for r in rows]

    def set_status(self, saga_id: str, status: str, error: str | None = None) -> None:
        """Commit a saga status; `error` replaces the stored reason when given."""
        self.commit(saga_id, (), status=status, error=error)

    # -- step events -------------------------------------------------------------------

    def record(self, saga_id: str, step: str, state: str, attempt: int, *,
               duration: float | None = None, result: Any = None,
               error: dict[str, Any] | None = None) -> StepEvent:
        """Append (and commit) one step transition; returns it."""
        (event,) = self.commit(saga_id, [Transition(step, state, attempt, duration, result,
                                                    error)])
        return event

    def commit(self, saga_id: str, transitions: Sequence[Transition], *,
               status: str | None = None, error: str | None = None) -> list[StepEvent]:
        """Append `transitions` in order and, when `status` is given, set the saga's
        status (and its reason, when `error` is given), all in one transaction,
        committed before returning. Returns the appended events."""
        assert status is None or status in STATUSES, status
        for t in transitions:
            assert t.state in STEP_STATES, t.state
        now = time.time()
        rows = _event_rows(saga_id, 0, now, transitions)  # seq = the offset from `first`

        def work(conn: sqlite3.Connection) -> int:
            (first,) = conn.execute(
                "SELECT COALESCE(MAX(seq), 0) + 1 FROM step_events WHERE saga_id = ?",
                (saga_id,)).fetchone()
            if rows:
                conn.executemany(_INSERT_EVENT, [(r[0], first + r[1], *r[2:]) for r in rows])
            if status is None:
                conn.execute("UPDATE sagas SET updated_at = ? WHERE id = ?", (now, saga_id))
            elif error is None:
                conn.execute("UPDATE sagas SET status = ?, updated_at = ? WHERE id = ?",
                             (status, now, saga_id))
            else:
                conn.execute(
                    "UPDATE sagas SET status = ?, error = ?, updated_at = ? WHERE id = ?",
                    (status, error, now, saga_id))
            return first

        return _events(saga_id, self._writer.run(work), now, transitions)

    def events(self, saga_id: str) -> list[StepEvent]:
        """Every step transition of the saga, in the order they were written."""
        with self._lock:
            rows = self._read.execute(
                "SELECT * FROM step_events WHERE saga_id = ? ORDER BY seq", (saga_id,)
            ).fetchall()
        return [_event(r) for r in rows]


_INSERT_EVENT = ("INSERT INTO step_events (saga_id, seq, step, state, attempt, at, duration,"
                 " result, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")


def _event_rows(saga_id: str, first: int, at: float,
                transitions: Sequence[Transition]) -> list[tuple]:
    return [(saga_id, first + i, t.step, t.state, t.attempt, at, t.duration,
             None if t.result is None else json.dumps(t.result),
             None if t.error is None else json.dumps(t.error))
            for i, t in enumerate(transitions)]


def _events(saga_id: str, first: int, at: float,
            transitions: Sequence[Transition]) -> list[StepEvent]:
    return [StepEvent(saga_id, first + i, t.step, t.state, t.attempt, at, t.duration,
                      t.result, t.error) for i, t in enumerate(transitions)]


# -- the shared writer -------------------------------------------------------------------

def _open(path: Path) -> sqlite3.Connection:
    # isolation_level=None: we open transactions ourselves, so a commit is explicit.
    conn = sqlite3.connect(path, isolation_level=None, timeout=30, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    return conn


class _Job:
    __slots__ = ("work", "fsync", "done", "result", "error")

    def __init__(self, work: Callable[[sqlite3.Connection], Any], fsync: bool):
        self.work = work
        self.fsync = fsync
        self.done = False
        self.result: Any = None
        self.error: BaseException | None = None

    def outcome(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.result


class _Writer:
    """The one write connection of this process to a log file, with group commit.

    `run(work)` queues `work(conn)` and returns its result once it is committed
    (`fsync`: and synced to disk, even with synchronous=NORMAL). The first caller to
    find no commit in flight leads: it takes every queued job, runs each in a savepoint
    inside one BEGIN IMMEDIATE ... COMMIT (one fsync for all), and wakes the others; a
    job that raises is rolled back alone and its caller gets the error. Callers queued
    during that commit are taken by the next leader, one of themselves.
    BEGIN IMMEDIATE takes SQLite's write lock before any read, so read-then-insert
    (idempotency key, next seq) cannot interleave with another process's writes.
    """

    _registry: dict[tuple[str, str], _Writer] = {}
    _registry_lock = threading.Lock()

    def __init__(self, path: Path, synchronous: str, key: tuple[str, str]):
        self.key = key
        self.synchronous = synchronous
        self.conn = _open(path)
        try:
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute(f"PRAGMA synchronous={synchronous}")
            self.conn.executescript(_SCHEMA)
        except BaseException:
            self.conn.close()
            raise
        self.users = 0
        self._cond = threading.Condition(threading.Lock())
        self._queue: list[_Job] = []
        self._leading = False

    @classmethod
    def acquire(cls, path: Path, synchronous: str) -> _Writer:
        key = (os.path.realpath(path), synchronous)
        with cls._registry_lock:
            writer = cls._registry.get(key)
            if writer is None:
                writer = cls._registry[key] = cls(path, synchronous, key)
            writer.users += 1
            return writer

    def release(self) -> None:
        with self._registry_lock:
            self.users -= 1
            if self.users > 0:
                return
            del self._registry[self.key]
        self.conn.close()

    def run(self, work: Callable[[sqlite3.Connection], T], fsync: bool = False) -> T:
        job = _Job(work, fsync)
        with self._cond:
            self._queue.append(job)
            while self._leading and not job.done:
                self._cond.wait()
            if job.done:
                return job.outcome()
            self._leading = True
            batch, self._queue = self._queue, []
        try:
            self._commit(batch)
        finally:
            with self._cond:
                for queued in batch:
                    queued.done = True
                self._leading = False
                self._cond.notify_all()
        return job.outcome()

    def _commit(self, batch: list[_Job]) -> None:
        conn = self.conn
        upgrade = self.synchronous != "FULL" and any(job.fsync for job in batch)
        try:
            if upgrade:
                conn.execute("PRAGMA synchronous=FULL")
            conn.execute("BEGIN IMMEDIATE")
            if len(batch) == 1:
                batch[0].result = batch[0].work(conn)
            else:
                for job in batch:
                    conn.execute("SAVEPOINT job")
                    try:
                        job.result = job.work(conn)
                    except Exception as exc:
                        conn.execute("ROLLBACK TO job")
                        job.error = exc
                    conn.execute("RELEASE job")
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
            for job in batch:  # nothing of the batch was committed
                job.result, job.error = None, job.error or exc
        finally:
            if upgrade:
                conn.execute(f"PRAGMA synchronous={self.synchronous}")


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _saga(row: sqlite3.Row) -> SagaRecord:
    return SagaRecord(
        id=row["id"], name=row["name"], status=row["status"],
        idempotency_key=row["idempotency_key"], input=json.loads(row["input"]),
        definition=json.loads(row["definition"]), fail_at=row["fail_at"],
        created_at=row["created_at"], updated_at=row["updated_at"], error=row["error"],
    )


def _event(row: sqlite3.Row) -> StepEvent:
    return StepEvent(
        saga_id=row["saga_id"], seq=row["seq"], step=row["step"], state=row["state"],
        attempt=row["attempt"], at=row["at"], duration=row["duration"],
        result=_loads(row["result"]), error=_loads(row["error"]),
    )
