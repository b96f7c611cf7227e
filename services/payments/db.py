"""SQLite plumbing shared by the charge ledger and the simulated provider.

Both live in SHOP_DATA_DIR/payments.db. Every operation opens its own short-lived
connection, so the stores are safe to share between the server's worker threads, and
every operation runs in exactly one transaction.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

BUSY_TIMEOUT_MS = 5000

# Per database file, for the process's lifetime: an idle connection that keeps the file
# open (so closing a short-lived connection never checkpoints and deletes the WAL, and
# the next commit never has to start a new WAL), and a lock that queues this process's
# writers in Python instead of in SQLite's busy handler, which sleeps in growing steps.
_keepalive: dict[Path, sqlite3.Connection] = {}
_write_locks: dict[Path, threading.Lock] = {}
_registry_lock = threading.Lock()


def init_schema(path: Path, schema: str) -> None:
    """Create the database folder and `schema` (idempotent) and switch the file to WAL."""
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
def transaction(path: Path, write: bool = False) -> Iterator[sqlite3.Connection]:
    """One transaction on a fresh connection: committed on success, rolled back on error.

    Writers take the database lock up front (BEGIN IMMEDIATE) so a read-then-write
    sequence cannot be interleaved with another writer's.
    """
    lock = _write_locks.get(path) if write else None
    if lock is not None:
        lock.acquire()
    try:
        conn = _connect(path)
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


def now() -> str:
    """The timestamp format stored in every table (UTC, milliseconds)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _connect(path: Path, check_same_thread: bool = True) -> sqlite3.Connection:
    # isolation_level=None: the sqlite3 module must not open transactions on its own,
    # `transaction` does that explicitly.
    conn = sqlite3.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000,
                           check_same_thread=check_same_thread)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    return conn
