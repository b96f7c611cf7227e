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

Several processes may open the same file (a `saga run` next to a `saga resume`);
WAL lets readers go on while one writer commits, and busy_timeout makes writers queue.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


class SagaLog:
    """Sagas and their step events in `path`. Thread-safe (one connection, one lock)."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we open transactions ourselves, so a commit is explicit.
        self._conn = sqlite3.connect(self.path, isolation_level=None, timeout=30,
                                     check_same_thread=False)
        self._conn.row_factory = sqlite3.Row
        self._lock = threading.Lock()
        self._conn.execute("PRAGMA journal_mode=WAL")
        # FULL: a committed transition survives power loss, not only a process crash.
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.executescript(_SCHEMA)

    def close(self) -> None:
        self._conn.close()

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
        saga_id = uuid.uuid4().hex[:16]
        key = idempotency_key or f"auto-{saga_id}"
        now = time.time()
        with self._tx() as conn:
            row = conn.execute("SELECT * FROM sagas WHERE idempotency_key = ?",
                               (key,)).fetchone()
            if row is not None:
                return _saga(row), False
            conn.execute(
                "INSERT INTO sagas (id, name, status, idempotency_key, input, definition,"
                " fail_at, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (saga_id, name, RUNNING, key, json.dumps(input), json.dumps(definition),
                 fail_at, now, now),
            )
        return self.get(saga_id), True

    def get(self, saga_id: str) -> SagaRecord:
        """The saga; KeyError when unknown. A unique prefix of an id is accepted."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT * FROM sagas WHERE id = ? OR id LIKE ? LIMIT 2",
                (saga_id, saga_id.replace("%", "").replace("_", "") + "%"),
            ).fetchall()
        exact = [r for r in rows if r["id"] == saga_id]
        if exact or len(rows) == 1:
            return _saga((exact or rows)[0])
        raise KeyError(saga_id)

    def by_key(self, idempotency_key: str) -> SagaRecord | None:
        with self._lock:
            row = self._conn.execute("SELECT * FROM sagas WHERE idempotency_key = ?",
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
            rows = self._conn.execute(query, (*args, limit)).fetchall()
        return [_saga(r) for r in rows]

    def set_status(self, saga_id: str, status: str, error: str | None = None) -> None:
        """Commit a saga status; `error` replaces the stored reason when given."""
        assert status in STATUSES, status
        with self._tx() as conn:
            if error is None:
                conn.execute("UPDATE sagas SET status = ?, updated_at = ? WHERE id = ?",
                             (status, time.time(), saga_id))
            else:
                conn.execute(
                    "UPDATE sagas SET status = ?, error = ?, updated_at = ? WHERE id = ?",
                    (status, error, time.time(), saga_id))

    # -- step events -------------------------------------------------------------------

    def record(self, saga_id: str, step: str, state: str, attempt: int, *,
               duration: float | None = None, result: Any = None,
               error: dict[str, Any] | None = None) -> StepEvent:
        """Append (and commit) one step transition; returns it."""
        assert state in STEP_STATES, state
        now = time.time()
        with self._tx() as conn:
            (seq,) = conn.execute(
                "SELECT COALESCE(MAX(seq), 0) + 1 FROM step_events WHERE saga_id = ?",
                (saga_id,)).fetchone()
            conn.execute(
                "INSERT INTO step_events (saga_id, seq, step, state, attempt, at, duration,"
                " result, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (saga_id, seq, step, state, attempt, now, duration,
                 None if result is None else json.dumps(result),
                 None if error is None else json.dumps(error)),
            )
            conn.execute("UPDATE sagas SET updated_at = ? WHERE id = ?", (now, saga_id))
        return StepEvent(saga_id, seq, step, state, attempt, now, duration, result, error)

    def events(self, saga_id: str) -> list[StepEvent]:
        """Every step transition of the saga, in the order they were written."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT * FROM step_events WHERE saga_id = ? ORDER BY seq", (saga_id,)
            ).fetchall()
        return [_event(r) for r in rows]

    # -- internals ---------------------------------------------------------------------

    def _tx(self):
        return _Transaction(self._conn, self._lock)


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT under the lock: the write lock is taken before reading,
    so read-then-insert (idempotency key, next seq) cannot interleave with another
    process writing the same file."""

    def __init__(self, conn: sqlite3.Connection, lock: threading.Lock):
        self.conn, self.lock = conn, lock

    def __enter__(self) -> sqlite3.Connection:
        self.lock.acquire()
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except BaseException:
            self.lock.release()
            raise
        return self.conn

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self.conn.execute("ROLLBACK" if exc_type else "COMMIT")
        finally:
            self.lock.release()


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
