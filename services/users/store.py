"""SQLite store of user accounts (SHOP_DATA_DIR/users.db).

Emails are stored normalised (trimmed, lower-case) and are unique. Each public method
opens its own connection and runs in one transaction, so the store is safe to share
between the WSGI server's worker threads.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from shopkit.sqlite import SqliteStore

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    email         TEXT NOT NULL UNIQUE,
    name          TEXT,
    password_hash TEXT NOT NULL,
    created_at    TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
)
"""


class EmailTaken(Exception):
    """An account with this email already exists."""


@dataclass(frozen=True)
class User:
    id: int
    email: str
    name: str | None
    password_hash: str

    def public(self) -> dict:
        """The fields the API may show; never the hash."""
        return {"id": self.id, "email": self.email, "name": self.name}


def _user(row: sqlite3.Row | None) -> User | None:
    if row is None:
        return None
    return User(row["id"], row["email"], row["name"], row["password_hash"])


class UserStore(SqliteStore):
    schema = SCHEMA

    def add(self, email: str, name: str | None, password_hash: str) -> User:
        """Create an account; EmailTaken if the (normalised) email is in use."""
        try:
            with self._transaction() as conn:
                cur = conn.execute(
                    "INSERT INTO users (email, name, password_hash) VALUES (?, ?, ?)",
                    (email, name, password_hash),
                )
        except sqlite3.IntegrityError as exc:
            raise EmailTaken(email) from exc
        return User(cur.lastrowid, email, name, password_hash)

    def by_email(self, email: str) -> User | None:
        with self._transaction() as conn:
            row = conn.execute("SELECT * FROM users WHERE email = ?", (email,)).fetchone()
        return _user(row)

    def by_id(self, user_id: int) -> User | None:
        with self._transaction() as conn:
            row = conn.execute("SELECT * FROM users WHERE id = ?", (user_id,)).fetchone()
        return _user(row)

    def set_password_hash(self, user_id: int, password_hash: str) -> None:
        with self._transaction() as conn:
            conn.execute(
                "UPDATE users SET password_hash = ? WHERE id = ?", (password_hash, user_id)
            )

    def ping(self) -> None:
        """Raise sqlite3.Error unless the users table can be read."""
        with self._transaction() as conn:
            conn.execute("SELECT 1 FROM users LIMIT 1").fetchall()
