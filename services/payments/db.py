"""Storage plumbing shared by the charge ledger and the simulated provider: one
interface, two backends.

    SqliteDatabase    SHOP_DATA_DIR/payments.db (default): one task, its own data dir
    PostgresDatabase  the service's own PostgreSQL database, when shopctl hands it a
                      connection URL (secret `database_url`): every replica of a
                      swarm sees the same charges, so a retry that reaches another
                      replica finds the first attempt

`open_database(data_dir, url)` picks one. Both give the same guarantees:

  * `transaction(write)`: every operation runs in exactly one transaction, committed
    on success and rolled back on error. Writers are serialised database-wide, so a
    read-then-write sequence cannot interleave with another writer's: SQLite takes
    the file's write lock up front (BEGIN IMMEDIATE), PostgreSQL a transaction-level
    advisory lock as the transaction's first statement (READ COMMITTED, so every
    statement after it sees what the previous writer committed).
  * `order_lock(order_id)`: the requests of one order run one after the other (a
    retry cannot overtake the attempt it repeats, nor a refund a charge whose provider
    call is in flight). SQLite: a lock in this process (the file has one process).
    PostgreSQL: the same, then a session-level advisory lock on the order, so the
    requests of all replicas queue; the lock's connection also runs the transactions
    made under it.
  * `errors`: the exception classes of a failed database (for /health).

SQL is written once, in the dialect both speak (ON CONFLICT DO NOTHING, BIGINT), with
`?` placeholders; the PostgreSQL backend rewrites them to psycopg's `%s`. Rows are
read by column name. psycopg is imported only when a URL is given.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

BUSY_TIMEOUT_MS = 5000


class Cursor(Protocol):
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...


class Connection(Protocol):
    """What a transaction hands its block: `execute(sql with ?, params)`; rows are
    mappings by column name."""

    def execute(self, sql: str, params: tuple = ()) -> Cursor: ...


class Database(Protocol):
    kind: str  # "sqlite" | "postgresql", as /health reports it
    errors: tuple[type[Exception], ...]

    def init_schema(self, schema: str) -> None: ...
    def transaction(self, write: bool = False) -> Any: ...  # context manager -> Connection
    def order_lock(self, order_id: str) -> Any: ...  # context manager
    def close(self) -> None: ...


def open_database(data_dir: Path, url: str | None) -> Database:
    """PostgreSQL at `url` when one is given, else SQLite in data_dir/payments.db."""
    if url:
        from pgdb import PostgresDatabase  # psycopg only where it is used

        return PostgresDatabase(url)
    return SqliteDatabase(data_dir / "payments.db")


def now() -> str:
    """The timestamp format stored in every table (UTC, milliseconds)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class OrderLocks:
    """One in-process lock per order id, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, tuple[threading.Lock, int]] = {}

    @contextmanager
    def hold(self, order_id: str) -> Iterator[None]:
        with self._guard:
            lock, users = self._locks.get(order_id, (threading.Lock(), 0))
            self._locks[order_id] = (lock, users + 1)
        try:
            with lock:
                yield
        finally:
            with self._guard:
                _, users = self._locks[order_id]
                if users == 1:
                    del self._locks[order_id]
                else:
                    self._locks[order_id] = (lock, users - 1)


# Per database file, for the process's lifetime: an idle connection that keeps the file
# open (so closing a short-lived connection never checkpoints and deletes the WAL, and
# the next commit never has to start a new WAL), and a lock that queues this process's
# writers in Python instead of in SQLite's busy handler, which sleeps in growing steps.
_keepalive: dict[Path, sqlite3.Connection] = {}
_write_locks: dict[Path, threading.Lock] = {}
_registry_lock = threading.Lock()


class SqliteDatabase:
    """One SQLite file. Every operation opens its own short-lived connection, so the
    database is safe to share between the server's worker threads."""

    kind = "sqlite"
    errors = (sqlite3.Error,)

    def __init__(self, path: Path):
        self.path = path
        self._orders = OrderLocks()

    def init_schema(self, schema: str) -> None:
        """Create the database folder and `schema` (idempotent) and switch the file to WAL."""
        path = self.path
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = _connect(path)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(schema)
        finally:
            conn.close()
        key = Path(path)
        with _registry_lock:
            _write_locks.setdefault(key, threading.Lock())
            if key not in _keepalive:
                keep = _connect(path, check_same_thread=False)
                keep.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
                _keepalive[key] = keep

    @contextmanager
    def transaction(self, write: bool = False) -> Iterator[sqlite3.Connection]:
        """One transaction on a fresh connection: committed on success, rolled back on
        error. Writers take the database lock up front (BEGIN IMMEDIATE)."""
        lock = _write_locks.get(self.path) if write else None
        if lock is not None:
            lock.acquire()
        try:
            conn = _connect(self.path)
            try:
                conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                try:
                    yield conn
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
            finally:
                conn.close()
        finally:
            if lock is not None:
                lock.release()

    def order_lock(self, order_id: str):
        return self._orders.hold(order_id)

    def close(self) -> None:
        """Nothing to release: connections live for one transaction."""


def _connect(path: Path, check_same_thread: bool = True) -> sqlite3.Connection:
    # isolation_level=None: the sqlite3 module must not open transactions on its own,
    # `transaction` does that explicitly.
    conn = sqlite3.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000,
                           check_same_thread=check_same_thread)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    return conn
