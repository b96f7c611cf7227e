"""SQLite plumbing shared by the charge ledger and the simulated provider.

Both live in SHOP_DATA_DIR/payments.db. Every operation opens its own short-lived
connection, so the stores are safe to share between the server's worker threads, and
every operation runs in exactly one transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

BUSY_TIMEOUT_MS = 5000


def init_schema(path: Path, schema: str) -> None:
    """Create the database folder and `schema` (idempotent) and switch the file to WAL."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = _connect(path)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(schema)
    finally:
        conn.close()


@contextmanager
def transaction(path: Path, write: bool = False) -> Iterator[sqlite3.Connection]:
    """One transaction on a fresh connection: committed on success, rolled back on error.

    Writers take the database lock up front (BEGIN IMMEDIATE) so a read-then-write
    sequence cannot be interleaved with another writer's.
    """
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


def now() -> str:
    """The timestamp format stored in every table (UTC, milliseconds)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _connect(path: Path) -> sqlite3.Connection:
    # isolation_level=None: the sqlite3 module must not open transactions on its own,
    # `transaction` does that explicitly.
    conn = sqlite3.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    return conn
