"""The saga log on PostgreSQL: the same contract as shopctl.saga.log's SQLite SagaLog,
for drivers on several hosts sharing one log.

What differs from the SQLite log, and why:

Ownership by lease. A driver on another host cannot be checked by pid, so a saga's row
holds its driver (`owner`: host/pid/start/boot of the process plus a random part) and a
lease expiry (`lease_until`, on the database server's clock, so the hosts' clocks never
matter). A driver holds its sagas while it runs them: every commit of a saga renews its
lease and a thread of the process renews the leases of every saga it drives each third
of the lease (a step may take longer than a lease). A saga whose lease ran out is an
orphan: any driver may take it over (`saga resume`, a worker's sweep). Only the lease
says a driver is gone, on this host too: one rule for every host.

Claims lock the row with `SELECT ... FOR UPDATE SKIP LOCKED`: of several drivers
sweeping at once, one takes a saga and the others skip it at once (SagaBusy) instead
of queueing behind it, so two drivers never take the same saga.

Fencing. Each commit of a saga is conditional on the row still naming this process
(`UPDATE sagas ... WHERE id = ? AND owner = ?`, in the commit's transaction): a driver
that lost its lease (stalled longer than the lease, cut off from the database) and was
replaced fails its next commit with LeaseLost and acts no further, so a taken-over saga
never has two drivers writing its log. What the stalled driver was doing when it was
replaced (one step call) is repeated by the new driver with the same idempotency key,
which the participant answers once, as after any crash.

Durability. `synchronous` keeps its meaning (see shopctl.saga.log): NORMAL commits the
decisions (creation, statuses, the pivot's success, claims) with synchronous_commit on
and the other transitions with it off; FULL waits for the WAL flush on every commit. A
transaction that committed with synchronous_commit off is visible at once, and can be
lost only if the database server itself crashes; a later synchronous commit flushes it.
So the log may again be behind the world, never ahead, and the same rule applies to a
taken-over saga: when the server restarted since the saga's NORMAL driver claimed it
(pg_postmaster_start_time, recorded with the owner), its last records may be lost, and
the saga is flagged `after_reboot` exactly as after a reboot of a host with SQLite.

Outbox. Same semantics as on SQLite: an event is inserted with the status it
announces; publishers claim due events (SKIP LOCKED, so concurrent publishers on
several hosts take disjoint batches) for a lease, mark them published, or count a
failure and a backoff. Event due times are on the publishers' clocks, as on SQLite:
a skew costs at most an early redelivery, which consumers drop by event_id.

Connections: one per SagaLog (reads and writes, under a lock), plus one per process and
database for lease renewal. psycopg is imported only here, so only when a PostgreSQL
log is used.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any

import psycopg  # this module is imported only when a PostgreSQL log is opened
from psycopg.rows import dict_row

from shopctl.saga import log as L
from shopctl.saga import owner as _owner
from shopctl.saga.location import LEASE_ENV, mask

logger = logging.getLogger(__name__)

DEFAULT_LEASE = 15.0  # seconds: a dead host's sagas wait this long for another driver

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sagas (
    id              TEXT COLLATE "C" PRIMARY KEY,
    name            TEXT NOT NULL,
    status          TEXT NOT NULL,
    idempotency_key TEXT NOT NULL UNIQUE,
    input           TEXT NOT NULL,
    definition      TEXT NOT NULL,
    fail_at         TEXT,
    created_at      DOUBLE PRECISION NOT NULL,
    updated_at      DOUBLE PRECISION NOT NULL,
    error           TEXT,
    owner           TEXT,
    owner_sync      TEXT,
    owner_boot      DOUBLE PRECISION,
    lease_until     DOUBLE PRECISION,
    after_reboot    BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX IF NOT EXISTS sagas_by_status ON sagas (status, created_at);
CREATE TABLE IF NOT EXISTS step_events (
    saga_id  TEXT COLLATE "C" NOT NULL REFERENCES sagas (id),
    seq      INTEGER NOT NULL,
    step     TEXT NOT NULL,
    state    TEXT NOT NULL,
    attempt  INTEGER NOT NULL,
    at       DOUBLE PRECISION NOT NULL,
    duration DOUBLE PRECISION,
    result   TEXT,
    error    TEXT,
    PRIMARY KEY (saga_id, seq)
);
CREATE TABLE IF NOT EXISTS outbox (
    id           BIGSERIAL PRIMARY KEY,
    saga_id      TEXT COLLATE "C" NOT NULL REFERENCES sagas (id),
    event_type   TEXT NOT NULL,
    payload      TEXT NOT NULL,
    created_at   DOUBLE PRECISION NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_try_at  DOUBLE PRECISION NOT NULL,
    last_error   TEXT,
    published_at DOUBLE PRECISION,
    origin       TEXT
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (next_try_at) WHERE published_at IS NULL;
CREATE INDEX IF NOT EXISTS outbox_by_saga ON outbox (saga_id);
"""
# Serialises schema creation among processes starting at once (CREATE ... IF NOT EXISTS
# is not safe against a concurrent creator).
_SCHEMA_LOCK = 0x5A6A_105

_CLAIMING = "(claiming)"  # a claim found the row locked by another claimer
_NOW = "extract(epoch from clock_timestamp())::float8"
_SAGA_COLUMNS = ("SELECT s.*, GREATEST(s.updated_at, COALESCE((SELECT MAX(e.at) FROM"
                 " step_events e WHERE e.saga_id = s.id), 0)) AS last_at")
_SELECT_SAGA = _SAGA_COLUMNS + " FROM sagas s"
_INSERT_EVENT = ("INSERT INTO step_events (saga_id, seq, step, state, attempt, at, duration,"
                 " result, error) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)")
_INSERT_OUTBOX = ("INSERT INTO outbox (saga_id, event_type, payload, created_at, next_try_at,"
                  " origin) VALUES (%s, %s, %s, %s, %s, %s)")


class _Fenced(Exception):
    """A commit found its saga's row naming another driver."""


class LeaseLost(L.SagaBusy):
    """This process's lease on a saga ran out and another driver took it over: this one
    must act no further on it."""

    def __init__(self, saga_id: str, owner: str | None):
        super().__init__(saga_id, owner or "-/-")
        self.message = (f"saga {saga_id} was taken over by "
                        f"{_owner.describe(owner) if owner else 'another driver'}: this "
                        f"process's lease on it ran out")
        self.args = (self.message,)


_process_token: tuple[int, str] | None = None


def token() -> str:
    """This process as a driver on PostgreSQL: owner.token() plus a random part, so two
    processes of hosts that share a name and a pid never look the same."""
    global _process_token
    pid = os.getpid()
    if _process_token is None or _process_token[0] != pid:
        _process_token = (pid, f"{_owner.token()}/{uuid.uuid4().hex[:8]}")
    return _process_token[1]


def _connect(dsn: str):
    try:
        return psycopg.connect(dsn, autocommit=True, row_factory=dict_row,
                               connect_timeout=10, application_name="shopctl-saga")
    except psycopg.Error as exc:
        from shopctl.errors import ProjectStateError

        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ProjectStateError(
            f"cannot open the saga log {mask(dsn)}: {reason.replace(dsn, mask(dsn))}",
            hint="check that the PostgreSQL server runs and the saga_log url (or "
                 "SHOPCTL_SAGA_LOG) names it, with a user allowed to create tables") from None


class PgSagaLog:
    """Sagas, step events and the outbox in the PostgreSQL database at `dsn`; the same
    methods and guarantees as shopctl.saga.log.SagaLog (see the module docstring for
    ownership). Thread-safe. `lease`: seconds a driver's claim lasts without renewal."""

    def __init__(self, dsn: str, *, synchronous: str | None = None,
                 lease: float | None = None):
        sync = (synchronous or os.environ.get(L.SYNC_ENV) or "NORMAL").upper()
        if sync not in L.SYNC_MODES:
            raise ValueError(f"synchronous must be one of {', '.join(L.SYNC_MODES)}, got {sync!r}")
        self.synchronous = sync
        self.lease = float(lease if lease is not None
                           else os.environ.get(LEASE_ENV) or DEFAULT_LEASE)
        if self.lease <= 0:
            raise ValueError(f"lease must be positive, got {self.lease}")
        self.dsn = dsn
        self.location = mask(dsn)
        self.origin = f"{token()}/{uuid.uuid4().hex[:8]}"
        self._next_seq: dict[str, int] = {}
        self._lock = threading.Lock()
        self._conn = _connect(dsn)
        try:
            with self._conn.transaction():
                self._conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                self._conn.execute(_SCHEMA)
            # The server's start: a restart since a driver claimed may have lost its tail.
            # The session's default is what most commits want; the others SET LOCAL.
            self._session_sync = sync == "FULL"
            if not self._session_sync:
                self._conn.execute("SET synchronous_commit TO off")
            self._boot = self._conn.execute(
                "SELECT extract(epoch from pg_postmaster_start_time())::float8 AS b"
            ).fetchone()["b"]
        except BaseException:
            self._conn.close()
            raise
        # The sagas this log's process drives on this database share one renewer.
        self._key = dsn
        self._renewer = _Renewer.acquire(dsn, self.lease)
        self._closed = False

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._conn.close()
        self._renewer.release()

    def __enter__(self) -> PgSagaLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- plumbing ------------------------------------------------------------------------

    def _read(self, query: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]:
        with self._lock:
            return self._conn.execute(query, args).fetchall()

    def _write(self, work, *, sync: bool):
        """Run `work(conn)` in one transaction, committed before returning; `sync`: the
        commit waits for the WAL flush (synchronous_commit on). Pipelined: statements
        go out together and only reading a result waits for the server, so a commit
        costs about two round trips however many rows it writes."""
        with self._lock:
            conn = self._conn
            with conn.pipeline(), conn.transaction():
                if sync != self._session_sync:
                    conn.execute("SET LOCAL synchronous_commit TO " + ("on" if sync else "off"))
                return work(conn)

    def _sync(self, decision: bool) -> bool:
        return decision or self.synchronous == "FULL"

    # -- sagas -------------------------------------------------------------------------

    def create(self, name: str, input: dict[str, Any], definition: dict[str, Any], *,
               idempotency_key: str | None = None,
               fail_at: str | None = None) -> tuple[L.SagaRecord, bool]:
        saga, created, _ = self.create_with(name, input, definition, (),
                                            idempotency_key=idempotency_key, fail_at=fail_at)
        return saga, created

    def create_with(self, name: str, input: dict[str, Any], definition: dict[str, Any],
                    transitions: Sequence[L.Transition], *, idempotency_key: str | None = None,
                    fail_at: str | None = None
                    ) -> tuple[L.SagaRecord, bool, list[L.StepEvent]]:
        for t in transitions:
            assert t.state in L.STEP_STATES, t.state
        saga_id = uuid.uuid4().hex[:16]
        key = idempotency_key or f"auto-{saga_id}"
        now = time.time()
        input_json, definition_json = json.dumps(input), json.dumps(definition)
        rows = L._event_rows(saga_id, 1, now, transitions)
        me = token()

        def work(conn):
            inserted = conn.execute(
                "INSERT INTO sagas (id, name, status, idempotency_key, input, definition,"
                " fail_at, created_at, updated_at, owner, owner_sync, owner_boot, lease_until)"
                f" VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, {_NOW} + %s)"
                " ON CONFLICT (idempotency_key) DO NOTHING RETURNING id",
                (saga_id, name, L.RUNNING, key, input_json, definition_json, fail_at,
                 now, now, me, self.synchronous, self._boot, self.lease)).fetchone()
            if inserted is None:
                return conn.execute(_SELECT_SAGA + " WHERE idempotency_key = %s",
                                    (key,)).fetchone()
            if rows:
                conn.cursor().executemany(_INSERT_EVENT, rows)
            return None

        existing = self._write(work, sync=True)
        if existing is not None:
            return L._saga(existing), False, []
        with L._driving_lock:
            L._driving.add((self._key, saga_id))
        self._next_seq[saga_id] = 1 + len(rows)
        saga = L.SagaRecord(id=saga_id, name=name, status=L.RUNNING, idempotency_key=key,
                            input=json.loads(input_json),
                            definition=json.loads(definition_json), fail_at=fail_at,
                            created_at=now, updated_at=now, error=None)
        return saga, True, L._events(saga_id, 1, now, transitions)

    def get(self, saga_id: str) -> L.SagaRecord:
        rows = self._read(_SELECT_SAGA + " WHERE id = %s", (saga_id,))
        if not rows and saga_id:
            prefix = saga_id.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            rows = self._read(_SELECT_SAGA + " WHERE id LIKE %s ORDER BY id LIMIT 2",
                              (prefix + "%",))
        if len(rows) == 1:
            return L._saga(rows[0])
        raise KeyError(saga_id)

    def by_key(self, idempotency_key: str) -> L.SagaRecord | None:
        rows = self._read(_SELECT_SAGA + " WHERE idempotency_key = %s", (idempotency_key,))
        return L._saga(rows[0]) if rows else None

    def list(self, status: str | None = None, limit: int = 100) -> list[L.SagaRecord]:
        query, args = _SELECT_SAGA, []
        if status:
            query += " WHERE status = %s"
            args.append(status)
        query += " ORDER BY created_at DESC LIMIT %s"
        return [L._saga(r) for r in self._read(query, (*args, limit))]

    def set_status(self, saga_id: str, status: str, error: str | None = None) -> None:
        self.commit(saga_id, (), status=status, error=error)

    # -- step events -------------------------------------------------------------------

    def record(self, saga_id: str, step: str, state: str, attempt: int, *,
               duration: float | None = None, result: Any = None,
               error: dict[str, Any] | None = None) -> L.StepEvent:
        (event,) = self.commit(saga_id, [L.Transition(step, state, attempt, duration, result,
                                                      error)])
        return event

    def commit(self, saga_id: str, transitions: Sequence[L.Transition], *,
               status: str | None = None, error: str | None = None,
               outbox: Sequence[tuple[str, dict[str, Any]]] = (),
               at: float | None = None, durable: bool = False) -> list[L.StepEvent]:
        """As SagaLog.commit, fenced: LeaseLost when another driver took the saga over
        (nothing is written then). Renews this process's lease on the saga."""
        assert status is None or status in L.STATUSES, status
        for t in transitions:
            assert t.state in L.STEP_STATES, t.state
        now = time.time() if at is None else at
        rows = L._event_rows(saga_id, 0, now, transitions)
        final = status in L.FINAL
        me = token()
        # A final status lets go of the saga; anything else renews the lease.
        sets, values = (["owner = NULL", "lease_until = NULL"], []) if final else (
            [f"lease_until = {_NOW} + %s"], [self.lease])
        if status is not None:
            sets += ["status = %s", "updated_at = %s"]
            values += [status, now]
        if error is not None:
            sets.append("error = %s")
            values.append(error)
        queued = [(saga_id, kind, json.dumps(payload), now, now + L.OUTBOX_LEASE, self.origin)
                  for kind, payload in outbox]
        known = self._next_seq.get(saga_id)

        def work(conn):
            # The fence: the row still names this process (or nobody, for a saga no
            # driver holds, as after release()); else another driver took it over. Its
            # answer is read last, so the whole commit goes out in one pipeline; when it
            # says no, raising rolls back the rows written after it.
            fence = conn.execute(
                f"UPDATE sagas SET {', '.join(sets)} WHERE id = %s"
                " AND (owner = %s OR owner IS NULL) RETURNING id", (*values, saga_id, me))
            first = known
            if first is None:
                first = conn.execute(
                    "SELECT COALESCE(MAX(seq), 0) + 1 AS n FROM step_events WHERE saga_id = %s",
                    (saga_id,)).fetchone()["n"]
            if rows:
                conn.cursor().executemany(_INSERT_EVENT,
                                          [(r[0], first + r[1], *r[2:]) for r in rows])
            if queued:
                conn.cursor().executemany(_INSERT_OUTBOX, queued)
            if fence.fetchone() is None:
                raise _Fenced
            return first

        try:
            first = self._write(work, sync=self._sync(durable or status is not None))
        except (_Fenced, psycopg.errors.IntegrityError):
            # Not ours any more (a new driver's events may hold our next seq), or unknown.
            current = self._read("SELECT owner FROM sagas WHERE id = %s", (saga_id,))
            if not current:
                raise KeyError(saga_id) from None
            if current[0]["owner"] in (None, me):
                raise
            L._driving_discard(self._key, saga_id)
            self._next_seq.pop(saga_id, None)
            raise LeaseLost(saga_id, current[0]["owner"]) from None
        if final:
            L._driving_discard(self._key, saga_id)
            self._next_seq.pop(saga_id, None)
        elif L._driving_has(self._key, saga_id):
            self._next_seq[saga_id] = first + len(rows)
        return L._events(saga_id, first, now, transitions)

    # -- who drives a saga ---------------------------------------------------------------

    def claim(self, saga_id: str, *, force: bool = False) -> L.SagaRecord:
        """As SagaLog.claim; a saga is busy while its driver's lease runs (whatever its
        host), or while another driver is claiming it right now (SKIP LOCKED)."""
        me = token()
        key = self._key
        if not force:
            # The usual answer of a sweep is "busy": find it out without a write (a
            # locking read is one, and a synced commit).
            seen = self._read(f"SELECT owner, lease_until > {_NOW} AS held, status FROM sagas"
                              " WHERE id = %s", (saga_id,))
            if seen and seen[0]["status"] in L.CLAIMABLE and seen[0]["held"] and \
                    seen[0]["owner"] not in (None, me):
                raise L.SagaBusy(saga_id, seen[0]["owner"])

        def work(conn):
            row = conn.execute(
                _SAGA_COLUMNS + f", {_NOW} AS server_now FROM sagas s WHERE id = %s"
                " FOR UPDATE OF s SKIP LOCKED", (saga_id,)).fetchone()
            if row is None:
                seen = conn.execute("SELECT owner FROM sagas WHERE id = %s",
                                    (saga_id,)).fetchone()
                if seen is None:
                    return None, None
                return None, seen["owner"] or _CLAIMING  # locked: another driver takes it
            if row["status"] not in L.CLAIMABLE:
                return row, None
            current = row["owner"]
            expired = row["lease_until"] is None or row["lease_until"] <= row["server_now"]
            # A driver whose commits all waited for the WAL flush can have lost nothing;
            # one of a NORMAL log may have, if the server restarted under it.
            reboot = (bool(current) and row["owner_sync"] != "FULL"
                      and row["owner_boot"] is not None and row["owner_boot"] != self._boot)
            with L._driving_lock:
                if current and not force:
                    busy = (key, saga_id) in L._driving if current == me else not expired
                    if busy:
                        return row, current
                L._driving.add((key, saga_id))
            conn.execute(
                "UPDATE sagas SET owner = %s, owner_sync = %s, owner_boot = %s,"
                f" lease_until = {_NOW} + %s, after_reboot = after_reboot OR %s WHERE id = %s",
                (me, self.synchronous, self._boot, self.lease, reboot, saga_id))
            if reboot:
                row = {**row, "after_reboot": True}
            return row, None

        try:
            row, busy_with = self._write(work, sync=True)
        except BaseException:
            L._driving_discard(key, saga_id)
            raise
        if row is None and busy_with is None:
            raise KeyError(saga_id)
        if busy_with is _CLAIMING:
            busy = L.SagaBusy(saga_id, "-/-")
            busy.message = f"saga {saga_id} is being taken by another driver right now"
            busy.args = (busy.message,)
            raise busy
        if busy_with is not None:
            raise L.SagaBusy(saga_id, busy_with)
        self._next_seq.pop(saga_id, None)  # read the next seq from the log
        return L._saga(row)

    def release(self, saga_id: str) -> None:
        self._next_seq.pop(saga_id, None)
        if not L._driving_discard(self._key, saga_id):
            return
        self._write(lambda conn: conn.execute(
            "UPDATE sagas SET owner = NULL, lease_until = NULL WHERE id = %s AND owner = %s",
            (saga_id, token())), sync=True)

    # -- outbox --------------------------------------------------------------------------

    def fresh_events(self, limit: int = 100) -> list[L.OutboxEvent]:
        rows = self._read(
            "SELECT * FROM outbox WHERE published_at IS NULL AND origin = %s"
            " AND attempts = 0 AND next_try_at > %s ORDER BY id LIMIT %s",
            (self.origin, time.time() + 1.0, limit))
        return [L._outbox_event(r) for r in rows]

    def claim_events(self, limit: int = 100,
                     lease: float | None = None) -> list[L.OutboxEvent]:
        lease = L.OUTBOX_LEASE if lease is None else lease
        due = self._read("SELECT 1 FROM outbox WHERE published_at IS NULL AND next_try_at <= %s"
                         " LIMIT 1", (time.time(),))
        if not due:
            return []
        now = time.time()
        rows = self._write(lambda conn: conn.execute(
            "UPDATE outbox SET next_try_at = %s WHERE id IN (SELECT id FROM outbox"
            " WHERE published_at IS NULL AND next_try_at <= %s ORDER BY id LIMIT %s"
            " FOR UPDATE SKIP LOCKED) RETURNING *", (now + lease, now, limit)).fetchall(),
            sync=False)
        return [L._outbox_event(r) for r in sorted(rows, key=lambda r: r["id"])]

    def events_published(self, ids: Sequence[int]) -> None:
        now = time.time()
        self._write(lambda conn: conn.execute(
            "UPDATE outbox SET published_at = %s, attempts = attempts + 1 WHERE id = ANY(%s)",
            (now, list(ids))), sync=False)

    def event_failed(self, ids: Sequence[int], error: str, retry_in: float) -> None:
        due = time.time() + retry_in
        self._write(lambda conn: conn.execute(
            "UPDATE outbox SET attempts = attempts + 1, last_error = %s, next_try_at = %s"
            " WHERE id = ANY(%s)", (error, due, list(ids))), sync=False)

    def outbox(self, saga_id: str) -> list[L.OutboxEvent]:
        rows = self._read("SELECT * FROM outbox WHERE saga_id = %s ORDER BY id", (saga_id,))
        return [L._outbox_event(r) for r in rows]

    def unpublished(self) -> int:
        (row,) = self._read("SELECT COUNT(*) AS n FROM outbox WHERE published_at IS NULL")
        return row["n"]

    def events(self, saga_id: str) -> list[L.StepEvent]:
        rows = self._read("SELECT * FROM step_events WHERE saga_id = %s ORDER BY seq",
                          (saga_id,))
        return [L._event(r) for r in rows]


class _Renewer:
    """Renews, every third of the lease, the leases of every saga this process drives on
    one database, on a connection of its own (a step call may outlast a lease; the
    engine's commits renew too, but none happens during a call)."""

    _registry: dict[str, _Renewer] = {}
    _registry_lock = threading.Lock()

    def __init__(self, dsn: str, lease: float):
        self.dsn = dsn
        self.lease = lease
        self.holders = 0
        self._stop = threading.Event()
        self._conn = None
        self._thread = threading.Thread(target=self._loop, name="saga-lease", daemon=True)
        self._thread.start()

    @classmethod
    def acquire(cls, dsn: str, lease: float) -> _Renewer:
        with cls._registry_lock:
            renewer = cls._registry.get(dsn)
            if renewer is None or renewer._stop.is_set():
                renewer = cls._registry[dsn] = cls(dsn, lease)
            renewer.lease = min(renewer.lease, lease)
            renewer.holders += 1
            return renewer

    def release(self) -> None:
        with self._registry_lock:
            self.holders -= 1
            if self.holders > 0:
                return
            if self._registry.get(self.dsn) is self:
                del self._registry[self.dsn]
            self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(self.lease / 3):
            with L._driving_lock:
                ids = [saga for key, saga in L._driving if key == self.dsn]
            if not ids:
                continue
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = _connect(self.dsn)
                self._conn.execute(
                    f"UPDATE sagas SET lease_until = {_NOW} + %s WHERE owner = %s"
                    " AND id = ANY(%s)", (self.lease, token(), ids))
            except Exception as exc:  # the next commit's fence tells the engine
                logger.warning("saga log: could not renew leases: %s", exc)
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None
        if self._conn is not None:
            self._conn.close()
