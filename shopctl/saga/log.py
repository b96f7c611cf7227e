"""The durable saga log: one SQLite database (WAL) per project.

Tables
    sagas(id, name, status, idempotency_key UNIQUE, input, definition, fail_at,
          created_at, updated_at, error, owner, owner_sync, after_reboot)
    step_events(saga_id, seq, step, state, attempt, at, duration, result, error)
    outbox(id, saga_id, event_type, payload, created_at, attempts, next_try_at,
           last_error, published_at, origin)

Contract: every write is committed (and, when it is a decision, on disk) before the
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

Durability (`synchronous=`, or the environment variable SHOPCTL_SAGA_SYNCHRONOUS).
Every write is committed before the method returns, so every transition survives a
crash of the process (SIGKILL included) at once. What differs is which commits wait for
the disk, which only matters when the machine itself goes down:
  NORMAL (the default) fsyncs the decisions: a saga's creation (its row and idempotency
    key), the pivot's success (after it the saga only goes forward), every status
    (compensating, completed, compensated, stuck: what decides the direction and what
    the user is told) and every change of driver. Other transitions ride on the next
    fsync; a power loss may take those written since the last one.
  FULL fsyncs every commit.
Why NORMAL is safe: a WAL fsync makes every earlier commit durable too, so a lost tail
only ever follows the last decision, and the log is behind the world, never ahead.
Going forward from a short log is harmless: each step is redone with the same
idempotency key and the service answers with what it did the first time. Compensating
from a short log is not (a step that ran after the lost records would not be undone),
so a saga taken over from a NORMAL driver of an earlier boot (after_reboot, see
shopctl.saga.owner; the row keeps its driver's setting in owner_sync, and a FULL
driver can have lost nothing) is never compensated on a failure that may be
temporary: it is marked stuck, and `saga retry` goes forward again. A refusal (out of
stock, declined) still compensates: a refused step applied nothing, so no later step
ran either. NORMAL pays three fsyncs for a saga of four steps where FULL pays five;
bench/README_saga.md has what that is worth on these machines.

Outbox: an outcome event is inserted with the status it announces (commit(outbox=)),
so the event exists if and only if the outcome does; shopctl.saga.outbox publishes it.
Publishing bookkeeping (claims, marks, failures) is committed without an fsync even
under FULL: losing it costs a redelivery, never an event.

Owner: the process driving a saga is recorded in its row (claim(), create), and a
final status clears it. Another process may take an unfinished saga only once that
process is gone (shopctl.saga.owner), so `resume --all` never races a live `saga run`.

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

from shopctl.errors import OperationFailed
from shopctl.saga import owner as _owner

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
FINAL = (COMPLETED, COMPENSATED, STUCK)  # nobody drives the saga any more
CLAIMABLE = (RUNNING, COMPENSATING, STUCK)

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
    error           TEXT,
    owner           TEXT,
    owner_sync      TEXT,
    after_reboot    INTEGER NOT NULL DEFAULT 0
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
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS outbox (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    saga_id      TEXT NOT NULL REFERENCES sagas (id),
    event_type   TEXT NOT NULL,
    payload      TEXT NOT NULL,
    created_at   REAL NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_try_at  REAL NOT NULL,
    last_error   TEXT,
    published_at REAL,
    origin       TEXT
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (next_try_at) WHERE published_at IS NULL;
CREATE INDEX IF NOT EXISTS outbox_by_saga ON outbox (saga_id);
"""
# Columns added after the first release, for logs created before them.
_MIGRATIONS = {"sagas": {"owner": "ALTER TABLE sagas ADD COLUMN owner TEXT",
                         "after_reboot": "ALTER TABLE sagas ADD COLUMN after_reboot"
                                         " INTEGER NOT NULL DEFAULT 0",
                         "owner_sync": "ALTER TABLE sagas ADD COLUMN owner_sync TEXT"},
               "outbox": {"origin": "ALTER TABLE outbox ADD COLUMN origin TEXT"}}
# How long a new event is left to the publisher of the process that wrote it before
# another process's publisher may send it (after a crash, say).
OUTBOX_LEASE = 30.0


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
    # Taken over from a driver of an earlier boot: its last records may be lost.
    after_reboot: bool = False

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
class OutboxEvent:
    """A saga outcome event, written with the status it announces (transactional outbox)
    and published to the broker afterwards, at least once."""

    id: int
    saga_id: str
    event_type: str
    payload: dict[str, Any]
    created_at: float
    attempts: int
    last_error: str | None
    published_at: float | None

    @property
    def event_id(self) -> str:
        """Stable across redeliveries: consumers drop an event_id they have seen."""
        return f"{self.saga_id}-{self.id}"

    def message(self) -> dict[str, Any]:
        return {**self.payload, "event_id": self.event_id}

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "event_id": self.event_id}


class SagaBusy(OperationFailed):
    """Another live process drives this saga."""

    def __init__(self, saga_id: str, owner: str):
        super().__init__(
            f"saga {saga_id} is being run by {_owner.describe(owner)}",
            hint="wait for it to finish (`shopctl saga show " + saga_id + "`); a saga is "
                 "taken over only once the process driving it is gone")
        self.saga_id = saga_id
        self.owner = owner


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
        sync = (synchronous or os.environ.get(SYNC_ENV) or "NORMAL").upper()
        if sync not in SYNC_MODES:
            raise ValueError(f"synchronous must be one of {', '.join(SYNC_MODES)}, got {sync!r}")
        self.synchronous = sync
        self.location = str(self.path)
        self._writer = _Writer.acquire(self.path, sync)
        self._file = self._writer.key[0]
        # Names the events this log writes, so its own publisher finds them (fresh_events).
        self.origin = f"{_owner.token()}/{uuid.uuid4().hex[:8]}"
        # The next event number of each saga this log drives: only its driver appends
        # to a saga, so no need to ask the file (a second writer would hit the primary
        # key, never interleave silently).
        self._next_seq: dict[str, int] = {}
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
        me = _owner.token()

        def work(conn: sqlite3.Connection) -> sqlite3.Row | None:
            inserted = conn.execute(
                "INSERT INTO sagas (id, name, status, idempotency_key, input, definition,"
                " fail_at, created_at, updated_at, owner, owner_sync)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (idempotency_key) DO NOTHING",
                (saga_id, name, RUNNING, key, input_json, definition_json, fail_at,
                 now, now, me, self.synchronous),
            ).rowcount
            if not inserted:  # a known key: the first saga
                return conn.execute(_SELECT_SAGA + " WHERE idempotency_key = ?",
                                    (key,)).fetchone()
            if rows:
                conn.executemany(_INSERT_EVENT, rows)
            return None

        existing = self._writer.run(work, fsync=True)
        if existing is not None:
            return _saga(existing), False, []
        with _driving_lock:  # the creator drives its saga
            _driving.add((self._file, saga_id))
        self._next_seq[saga_id] = 1 + len(rows)
        # What get() and events() would read back, without reading it back.
        saga = SagaRecord(id=saga_id, name=name, status=RUNNING, idempotency_key=key,
                          input=json.loads(input_json),
                          definition=json.loads(definition_json), fail_at=fail_at,
                          created_at=now, updated_at=now, error=None)
        return saga, True, _events(saga_id, 1, now, transitions)

    def get(self, saga_id: str) -> SagaRecord:
        """The saga; KeyError when unknown. A unique prefix of an id is accepted."""
        with self._lock:
            rows = self._read.execute(_SELECT_SAGA + " WHERE id = ?",
                                      (saga_id,)).fetchall()
            if not rows and saga_id:
                # A range on the primary key, so the prefix look-up uses the index.
                prefix = saga_id.lower()  # ids are lowercase hex
                rows = self._read.execute(
                    _SELECT_SAGA + " WHERE id >= ? AND id < ? ORDER BY id LIMIT 2",
                    (prefix, prefix + "\U0010ffff")).fetchall()
        if len(rows) == 1:
            return _saga(rows[0])
        raise KeyError(saga_id)

    def by_key(self, idempotency_key: str) -> SagaRecord | None:
        with self._lock:
            row = self._read.execute(_SELECT_SAGA + " WHERE idempotency_key = ?",
                                     (idempotency_key,)).fetchone()
        return None if row is None else _saga(row)

    def list(self, status: str | None = None, limit: int = 100) -> list[SagaRecord]:
        """Newest first."""
        query, args = _SELECT_SAGA, []
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
               status: str | None = None, error: str | None = None,
               outbox: Sequence[tuple[str, dict[str, Any]]] = (),
               at: float | None = None, durable: bool = False) -> list[StepEvent]:
        """Append `transitions` in order and, when `status` is given, set the saga's
        status (and its reason, when `error` is given), and queue the `outbox` events
        (event_type, payload) for publishing, all in one transaction, committed before
        returning. A final status also lets go of the saga. `at`: the time to record (now
        by default). A commit with a status, or `durable`, is fsynced whatever the
        synchronous setting. Returns the appended events."""
        assert status is None or status in STATUSES, status
        for t in transitions:
            assert t.state in STEP_STATES, t.state
        now = time.time() if at is None else at
        rows = _event_rows(saga_id, 0, now, transitions)  # seq = the offset from `first`
        final = status in FINAL
        sets = ["status = ?", "updated_at = ?"] + (["error = ?"] if error is not None else []) + (
            ["owner = NULL"] if final else [])
        values = (status, now, *((error,) if error is not None else ()))
        queued = [(saga_id, kind, json.dumps(payload), now, now + OUTBOX_LEASE, self.origin)
                  for kind, payload in outbox]
        known = self._next_seq.get(saga_id)

        def work(conn: sqlite3.Connection) -> int:
            first = known
            if first is None:
                (first,) = conn.execute(
                    "SELECT COALESCE(MAX(seq), 0) + 1 FROM step_events WHERE saga_id = ?",
                    (saga_id,)).fetchone()
            if rows:
                conn.executemany(_INSERT_EVENT, [(r[0], first + r[1], *r[2:]) for r in rows])
            # Without a status the saga's row is left alone: one page less to write, and
            # its updated_at is read as max(its own, its last event's).
            if status is not None:
                conn.execute(f"UPDATE sagas SET {', '.join(sets)} WHERE id = ?",
                             (*values, saga_id))
            if queued:
                conn.executemany(_INSERT_OUTBOX, queued)
            return first

        first = self._writer.run(work, fsync=durable or status is not None)
        if final:
            _driving_discard(self._file, saga_id)
            self._next_seq.pop(saga_id, None)
        elif _driving_has(self._file, saga_id):
            self._next_seq[saga_id] = first + len(rows)
        return _events(saga_id, first, now, transitions)

    # -- who drives a saga ---------------------------------------------------------------

    def claim(self, saga_id: str, *, force: bool = False) -> SagaRecord:
        """Take an unfinished or stuck saga for this process to drive, and return it.
        SagaBusy when a live process (this one included, through another engine) drives
        it; `force` takes it anyway (for a driver on another host that is known gone).
        A finished saga is returned as it is. KeyError when unknown."""
        me = _owner.token()
        file = self._file

        def work(conn: sqlite3.Connection) -> tuple[sqlite3.Row | None, str | None]:
            row = conn.execute(_SELECT_SAGA + " WHERE id = ?", (saga_id,)).fetchone()
            if row is None or row["status"] not in CLAIMABLE:
                return row, None
            current = row["owner"]
            # A driver that fsynced every transition (FULL) can have lost nothing.
            reboot = (bool(current) and _owner.earlier_boot(current)
                      and row["owner_sync"] != "FULL")
            with _driving_lock:
                if current and not force:
                    if current == me:
                        busy = (file, saga_id) in _driving
                    else:
                        busy = _owner.alive(current) is not False
                    if busy:
                        return row, current
                _driving.add((file, saga_id))  # undone below if the commit fails
            conn.execute("UPDATE sagas SET owner = ?, owner_sync = ?,"
                         " after_reboot = after_reboot OR ? WHERE id = ?",
                         (me, self.synchronous, reboot, saga_id))
            if reboot:
                row = conn.execute(_SELECT_SAGA + " WHERE id = ?", (saga_id,)).fetchone()
            return row, None

        try:
            row, busy_with = self._writer.run(work, fsync=True)
        except BaseException:
            _driving_discard(file, saga_id)
            raise
        if row is None:
            raise KeyError(saga_id)
        if busy_with is not None:
            raise SagaBusy(saga_id, busy_with)
        return _saga(row)

    def release(self, saga_id: str) -> None:
        """Let go of a saga this process took and left unfinished (an error stopped its
        engine), so another process may resume it while this one still runs."""
        self._next_seq.pop(saga_id, None)
        if not _driving_discard(self._file, saga_id):
            return
        # Synced: a saga nobody drives has all its records on disk (see claim()).
        self._writer.run(lambda conn: conn.execute(
            "UPDATE sagas SET owner = NULL WHERE id = ? AND owner = ?",
            (saga_id, _owner.token())), fsync=True)

    # -- outbox --------------------------------------------------------------------------

    def fresh_events(self, limit: int = 100) -> list[OutboxEvent]:
        """Events this SagaLog wrote and nobody tried to send yet, oldest first. They are
        its own for OUTBOX_LEASE seconds after they were written, so reading them takes
        no write: the cheap path for a process publishing what it just did."""
        with self._lock:
            rows = self._read.execute(
                "SELECT * FROM outbox WHERE published_at IS NULL AND origin = ?"
                " AND attempts = 0 AND next_try_at > ? ORDER BY id LIMIT ?",
                (self.origin, time.time() + 1.0, limit)).fetchall()
        return [_outbox_event(r) for r in rows]

    def claim_events(self, limit: int = 100, lease: float = OUTBOX_LEASE) -> list[OutboxEvent]:
        """Unpublished events that are due (failed ones after their backoff, and those
        a process left), oldest first, hidden from other publishers for `lease` seconds
        (a publisher that dies lets them come back after it)."""
        with self._lock:  # the usual answer is "none": find it out without a write
            due = self._read.execute(
                "SELECT 1 FROM outbox WHERE published_at IS NULL AND next_try_at <= ?"
                " LIMIT 1", (time.time(),)).fetchone()
        if due is None:
            return []

        def work(conn: sqlite3.Connection) -> list[sqlite3.Row]:
            now = time.time()
            rows = conn.execute(
                "SELECT * FROM outbox WHERE published_at IS NULL AND next_try_at <= ?"
                " ORDER BY id LIMIT ?", (now, limit)).fetchall()
            if rows:
                conn.executemany("UPDATE outbox SET next_try_at = ? WHERE id = ?",
                                 [(now + lease, r["id"]) for r in rows])
            return rows

        return [_outbox_event(r) for r in self._writer.run(work, durable=False)]

    def events_published(self, ids: Sequence[int]) -> None:
        """Mark events published. Not fsynced: losing this costs a redelivery only."""
        now = time.time()
        self._writer.run(lambda conn: conn.executemany(
            "UPDATE outbox SET published_at = ?, attempts = attempts + 1 WHERE id = ?",
            [(now, i) for i in ids]), durable=False)

    def event_failed(self, ids: Sequence[int], error: str, retry_in: float) -> None:
        """Count a failed attempt of each event; they are due again in `retry_in` s."""
        due = time.time() + retry_in
        self._writer.run(lambda conn: conn.executemany(
            "UPDATE outbox SET attempts = attempts + 1, last_error = ?, next_try_at = ?"
            " WHERE id = ?", [(error, due, i) for i in ids]), durable=False)

    def outbox(self, saga_id: str) -> list[OutboxEvent]:
        """The saga's outcome events, published or not, oldest first."""
        with self._lock:
            rows = self._read.execute("SELECT * FROM outbox WHERE saga_id = ? ORDER BY id",
                                      (saga_id,)).fetchall()
        return [_outbox_event(r) for r in rows]

    def unpublished(self) -> int:
        """How many events still wait for the broker."""
        with self._lock:
            (count,) = self._read.execute(
                "SELECT COUNT(*) FROM outbox WHERE published_at IS NULL").fetchone()
        return count

    def events(self, saga_id: str) -> list[StepEvent]:
        """Every step transition of the saga, in the order they were written."""
        with self._lock:
            rows = self._read.execute(
                "SELECT * FROM step_events WHERE saga_id = ? ORDER BY seq", (saga_id,)
            ).fetchall()
        return [_event(r) for r in rows]


# A transition does not touch its saga's row (one page less to write per commit), so a
# saga's updated_at is read as the later of its row's and its last event's time.
_SELECT_SAGA = ("SELECT s.*, max(s.updated_at, COALESCE((SELECT MAX(e.at) FROM step_events e"
                " WHERE e.saga_id = s.id), 0)) AS last_at FROM sagas s")

_INSERT_OUTBOX = ("INSERT INTO outbox (saga_id, event_type, payload, created_at, next_try_at,"
                  " origin) VALUES (?, ?, ?, ?, ?, ?)")

# (log file, saga id) of the sagas an engine of this process drives now.
_driving: set[tuple[str, str]] = set()
_driving_lock = threading.Lock()


def _driving_has(file: str, saga_id: str) -> bool:
    return (file, saga_id) in _driving


def _driving_discard(file: str, saga_id: str) -> bool:
    with _driving_lock:
        if (file, saga_id) in _driving:
            _driving.discard((file, saga_id))
            return True
        return False


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
    __slots__ = ("work", "fsync", "durable", "done", "result", "error")

    def __init__(self, work: Callable[[sqlite3.Connection], Any], fsync: bool, durable: bool):
        self.work = work
        self.fsync = fsync
        self.durable = durable
        self.done = False
        self.result: Any = None
        self.error: BaseException | None = None

    def outcome(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.result


def _owned(result: Any) -> Any:
    """A job's result as its caller may keep it: never a cursor of the shared connection.
    A cursor handed to another thread keeps its statement busy until that thread drops
    it, while this writer reuses the statement: SQLite then refuses the bind ("bad
    parameter or other API misuse") and the write is lost."""
    if isinstance(result, sqlite3.Cursor):
        result.close()
        return None
    return result


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
            _migrate(self.conn)
        except sqlite3.OperationalError as exc:
            self.conn.close()
            if "readonly" not in str(exc) and "unable to open" not in str(exc):
                raise
            # Another user's saga.db, or a read-only file in a writable folder.
            from shopctl.errors import ProjectStateError

            raise ProjectStateError(f"cannot write the saga log {path}: {exc}",
                                    hint=f"make {path} (and its -wal and -shm files) "
                                         "writable by this user") from None
        except BaseException:
            self.conn.close()
            raise
        self.holders = 0
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
            writer.holders += 1
            return writer

    def release(self) -> None:
        with self._registry_lock:
            self.holders -= 1
            if self.holders > 0:
                return
            del self._registry[self.key]
        self.conn.close()

    def run(self, work: Callable[[sqlite3.Connection], T], fsync: bool = False,
            durable: bool = True) -> T:
        job = _Job(work, fsync, durable)
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
        full = self.synchronous == "FULL"
        sync = "FULL" if any(job.fsync or (full and job.durable) for job in batch) else "NORMAL"
        switch = sync != self.synchronous
        try:
            if switch:
                conn.execute(f"PRAGMA synchronous={sync}")
            conn.execute("BEGIN IMMEDIATE")
            if len(batch) == 1:
                batch[0].result = _owned(batch[0].work(conn))
            else:
                for job in batch:
                    conn.execute("SAVEPOINT job")
                    try:
                        job.result = _owned(job.work(conn))
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
            if switch:
                conn.execute(f"PRAGMA synchronous={self.synchronous}")


def _migrate(conn: sqlite3.Connection) -> None:
    for table, columns in _MIGRATIONS.items():
        have = {row["name"] for row in conn.execute(f"PRAGMA table_info({table})")}
        for column, statement in columns.items():
            if column not in have:
                conn.execute(statement)


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _outbox_event(row: sqlite3.Row) -> OutboxEvent:
    return OutboxEvent(
        id=row["id"], saga_id=row["saga_id"], event_type=row["event_type"],
        payload=json.loads(row["payload"]), created_at=row["created_at"],
        attempts=row["attempts"], last_error=row["last_error"],
        published_at=row["published_at"])


def _saga(row: sqlite3.Row) -> SagaRecord:
    return SagaRecord(
        id=row["id"], name=row["name"], status=row["status"],
        idempotency_key=row["idempotency_key"], input=json.loads(row["input"]),
        definition=json.loads(row["definition"]), fail_at=row["fail_at"],
        created_at=row["created_at"], updated_at=row["last_at"], error=row["error"],
        after_reboot=bool(row["after_reboot"]),
    )


def _event(row: sqlite3.Row) -> StepEvent:
    return StepEvent(
        saga_id=row["saga_id"], seq=row["seq"], step=row["step"], state=row["state"],
        attempt=row["attempt"], at=row["at"], duration=row["duration"],
        result=_loads(row["result"]), error=_loads(row["error"]),
    )
