"""A service's store in one SQLite file (SHOP_DATA_DIR/<name>.db).

Each public method of a store opens its own connection and runs in one transaction, so
a store is safe to share between a server's worker threads.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class SqliteStore:
    """Base of such a store: opening one creates the file (and its folder) if missing, in
    WAL mode, and runs `schema`, one idempotent statement (CREATE TABLE IF NOT EXISTS ...).
    Subclasses set `schema` and run their queries in `with self._transaction() as conn:`.
    """

    schema: str

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._transaction() as conn:
            # WAL is a property of the database file: set once, kept across restarts.
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(self.schema)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """A fresh connection (rows as sqlite3.Row) in one transaction: committed when
        the block ends, rolled back if it raises; closed either way."""
        conn = sqlite3.connect(self.path, timeout=5.0)
        conn.row_factory = sqlite3.Row
        try:
            with conn:  # commit on success, roll back on error
                yield conn
        finally:
            conn.close()
