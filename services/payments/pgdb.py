"""The PostgreSQL backend of db.Database: the ledger and provider state of every replica
in the service's own database (db.py says what both backends guarantee).

Connections: a small pool per process (autocommit, transactions opened explicitly),
with two budgets so that a request never waits for what it is itself holding up:
    ORDER_SESSIONS     requests in an order lock, each on a connection of its own for
                       its whole length (provider calls included); its transactions
                       run on that connection
    SHORT_CONNECTIONS  transactions outside an order lock: the provider's (run by the
                       breaker's threads while a request waits for them), reads, /health
A short connection is held for one transaction only, so requests waiting for their
provider call always get one. At most ORDER_SESSIONS + SHORT_CONNECTIONS connections a
process (30; three replicas stay within PostgreSQL's default max_connections of 100),
IDLE_KEPT of them kept open between requests. A pooled connection the server dropped
(a PostgreSQL restart) is found out by the first statement of the next transaction,
before anything was done on it, and replaced by a new one, so the first request after
the server is back succeeds. No free connection within POOL_WAIT_S: PoolExhausted.

Locks, all advisory and in this service's database only, keyed (NAMESPACE, n):
    (NAMESPACE, 0)                   schema creation: replicas starting at once would
                                     race in CREATE TABLE IF NOT EXISTS
    (NAMESPACE, 1)                   writers, for a transaction (BEGIN IMMEDIATE's part)
    (NAMESPACE + 1, hashtext(order)) an order's requests, for a session; two orders
                                     whose hashes collide merely queue behind each other
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from db import OrderLocks
from psycopg.pq import TransactionStatus
from psycopg.rows import dict_row

ORDER_SESSIONS = 24
SHORT_CONNECTIONS = 6
IDLE_KEPT = 12
POOL_WAIT_S = 10.0
CONNECT_TIMEOUT_S = 5
NAMESPACE = 0x5041_5900  # "PAY"
SCHEMA_LOCK, WRITE_LOCK = 0, 1

_XACT_LOCK = "SELECT pg_advisory_xact_lock(%s::int, %s::int)"
_ORDER_LOCK = "SELECT pg_advisory_lock(%s::int, hashtext(%s))"
_ORDER_UNLOCK = "SELECT pg_advisory_unlock(%s::int, hashtext(%s))"


class PoolExhausted(psycopg.OperationalError):
    """No connection came free within POOL_WAIT_S."""


@functools.lru_cache(maxsize=256)
def _dialect(sql: str) -> str:
    """The shared SQL's `?` placeholders as psycopg's `%s`."""
    if "%" in sql:
        raise ValueError(f"'%' in shared SQL would be read as a placeholder: {sql!r}")
    return sql.replace("?", "%s")


class _Connection:
    """db.Connection over a psycopg connection: shared SQL, rows as dicts."""

    __slots__ = ("_conn",)

    def __init__(self, conn: psycopg.Connection):
        self._conn = conn

    def execute(self, sql: str, params: tuple = ()) -> psycopg.Cursor:
        return self._conn.execute(_dialect(sql), params)


class PostgresDatabase:
    kind = "postgresql"
    errors = (psycopg.Error,)

    def __init__(self, url: str):
        self._url = url
        self._idle: list[psycopg.Connection] = []
        self._idle_lock = threading.Lock()
        self._order_slots = threading.BoundedSemaphore(ORDER_SESSIONS)
        self._short_slots = threading.BoundedSemaphore(SHORT_CONNECTIONS)
        self._local = threading.local()  # .conn: the connection this thread holds
        self._orders = OrderLocks()

    def init_schema(self, schema: str) -> None:
        """Create `schema` (idempotent statements), one creator at a time."""
        with self._session(self._short_slots, "BEGIN") as conn:
            with _ending(conn):
                conn.execute(_XACT_LOCK, (NAMESPACE, SCHEMA_LOCK))
                for statement in filter(str.strip, schema.split(";")):
                    conn.execute(statement)

    @contextmanager
    def transaction(self, write: bool = False) -> Iterator[_Connection]:
        with self._session(self._short_slots, "BEGIN") as conn:
            with _ending(conn):
                if write:
                    conn.execute(_XACT_LOCK, (NAMESPACE, WRITE_LOCK))
                yield _Connection(conn)

    @contextmanager
    def order_lock(self, order_id: str) -> Iterator[None]:
        # This process's requests queue in Python first, so at most one connection per
        # order waits in PostgreSQL for another replica's.
        with self._orders.hold(order_id), \
                self._session(self._order_slots, _ORDER_LOCK, (NAMESPACE + 1, order_id)) as conn:
            try:
                yield
            finally:
                try:
                    conn.execute(_ORDER_UNLOCK, (NAMESPACE + 1, order_id))
                except psycopg.Error:
                    conn.close()  # the server drops a closed session's locks

    def close(self) -> None:
        with self._idle_lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    @contextmanager
    def _session(self, slots: threading.BoundedSemaphore, first: str,
                 params: tuple = ()) -> Iterator[psycopg.Connection]:
        """A connection with `first` run on it: the one this thread holds, else one of
        the pool's within the budget `slots`, held by this thread for the block."""
        held = getattr(self._local, "conn", None)
        if held is not None:
            held.execute(first, params)
            yield held
            return
        if not slots.acquire(timeout=POOL_WAIT_S):
            raise PoolExhausted(f"no database connection free within {POOL_WAIT_S:.0f}s")
        conn = None
        try:
            conn = self._checkout(first, params)
            self._local.conn = conn
            yield conn
        finally:
            self._local.conn = None
            if conn is not None:
                self._checkin(conn)
            slots.release()

    def _checkout(self, first: str, params: tuple) -> psycopg.Connection:
        while True:
            with self._idle_lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                break
            try:
                conn.execute(first, params)
                return conn
            except BaseException as exc:
                dropped = isinstance(exc, psycopg.OperationalError) and conn.broken
                conn.close()
                if not dropped:
                    raise
                # The server dropped it since its last use (a restart): the next one.
        conn = psycopg.connect(self._url, autocommit=True, row_factory=dict_row,
                               connect_timeout=CONNECT_TIMEOUT_S, application_name="payments",
                               keepalives=1, keepalives_idle=10, keepalives_interval=5,
                               keepalives_count=3)
        try:
            conn.execute(first, params)
        except BaseException:
            conn.close()
            raise
        return conn

    def _checkin(self, conn: psycopg.Connection) -> None:
        if not conn.closed and conn.info.transaction_status == TransactionStatus.IDLE:
            with self._idle_lock:
                if len(self._idle) < IDLE_KEPT:
                    self._idle.append(conn)
                    return
        conn.close()


@contextmanager
def _ending(conn: psycopg.Connection) -> Iterator[None]:
    """Commit the open transaction after the block, roll it back if the block raises."""
    try:
        yield
    except BaseException:
        if not conn.closed:
            try:
                conn.execute("ROLLBACK")
            except psycopg.Error:
                conn.close()
        raise
    conn.execute("COMMIT")
