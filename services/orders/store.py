"""Orders in SQLite, their state machine, and an outbox of the events they owe.

Pure Python (stdlib only): nameko is not needed to use or test this module.

State machine (every other move is refused with InvalidTransition)::

    PENDING --ship_order--> SHIPPED
    PENDING --cancel_order--> CANCELLED
    PENDING --fail_order--> FAILED        (a reason is required)

SHIPPED, CANCELLED and FAILED are final. Asking for the state an order is already in is
an idempotent repeat: the order comes back unchanged and no event is owed. There is no
CONFIRMED state: the saga reserves stock and takes payment around a PENDING order, then
either ships it (success) or cancels / fails it (compensation), so a confirmation step
would carry no information.

Every real state change writes its event (order_created, order_shipped, order_cancelled,
order_failed; the payload is the order) to the `outbox` table in the same transaction.
The service publishes outbox rows after the commit and deletes them once the broker has
them, so an event is neither lost when the broker blips nor sent for a repeat. (A crash
between the broker's confirm and the delete sends that one event again on restart:
delivery is at least once, and consumers should key on order id + event type.)

Concurrency: one SQLite connection per call, taken from a small pool of idle ones (opening
one and loading the schema cost more than most calls, and closing the last open one
checkpoints and deletes the WAL, which the next commit recreates and syncs, all with the
eventlet hub blocked); writes also take the store's lock (there is one store per process)
so that writers wait for each other in Python (a green lock under eventlet) instead of in
SQLite's blocking busy handler, which would stall the eventlet hub.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

PENDING = "PENDING"
SHIPPED = "SHIPPED"
CANCELLED = "CANCELLED"
FAILED = "FAILED"

# target state -> (states it may be reached from, event owed when it is)
TRANSITIONS: dict[str, tuple[frozenset[str], str]] = {
    SHIPPED: (frozenset({PENDING}), "order_shipped"),
    CANCELLED: (frozenset({PENDING}), "order_cancelled"),
    FAILED: (frozenset({PENDING}), "order_failed"),
}
CREATED_EVENT = "order_created"
# A failure is only useful to an operator with its cause; a cancellation may go unexplained.
REASON_REQUIRED = frozenset({FAILED})

MAX_ITEMS = 100
MAX_QTY = 10_000
MAX_UNIT_PRICE_CENTS = 100_000_000
MAX_TEXT = 200
MAX_LIST_LIMIT = 500
IDLE_CONNECTIONS = 4  # kept open for reuse
ITEM_KEYS = frozenset({"sku", "qty", "unit_price_cents"})

_SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id         TEXT NOT NULL,
    items           TEXT NOT NULL,          -- JSON list of {sku, qty, unit_price_cents}
    total_cents     INTEGER NOT NULL,
    status          TEXT NOT NULL,
    reason          TEXT,                   -- why it was cancelled or failed
    idempotency_key TEXT NOT NULL UNIQUE,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS orders_by_user ON orders (user_id, id);
CREATE TABLE IF NOT EXISTS outbox (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    event_type TEXT NOT NULL,
    payload    TEXT NOT NULL,               -- JSON
    created_at TEXT NOT NULL
);
"""


class OrderError(Exception):
    """A request the orders service refuses; the message is meant for the caller.

    Nameko sends a raised exception to the caller as {exc_type, value, ...}, so remote
    callers see the class name (e.g. "InvalidOrder") and this message.
    """


class InvalidOrder(OrderError):
    """The arguments are malformed (missing items, negative quantity, ...)."""


class OrderNotFound(OrderError):
    """No order has this id."""


class InvalidTransition(OrderError):
    """The order's state does not allow the change (e.g. cancelling a SHIPPED order)."""


@dataclass(frozen=True)
class PendingEvent:
    id: int
    event_type: str
    payload: dict[str, Any]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class OrderStore:
    """The orders database at `path` (created with its folder on first use)."""

    def __init__(self, path: Path):
        self.path = Path(path).resolve()
        self._uri = self.path.as_uri()  # percent-encoded, so any folder name is safe
        self._write_lock = threading.Lock()
        self._pool_lock = threading.Lock()
        self._idle: list[tuple[sqlite3.Connection, int]] = []  # (connection, file's inode)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(sqlite3.connect(self.path)) as conn:
            # WAL is a property of the file: set once, every later connection uses it.
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_SCHEMA)

    # -- connections -----------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        # mode=rw: a vanished database is an error (health turns 503), never a silent
        # new empty file. Autocommit mode; transactions are explicit in _write().
        # check_same_thread=False: a pooled connection serves one thread at a time, but
        # not always the one that opened it.
        conn = sqlite3.connect(
            f"{self._uri}?mode=rw", uri=True, timeout=5.0, isolation_level=None,
            check_same_thread=False,
        )
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA synchronous=NORMAL")  # durable enough with WAL, and faster
        return conn

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        """An idle connection to the file as it is now, or a new one; back to the pool
        afterwards unless SQLite failed. A pooled connection whose file was replaced or
        deleted is dropped, so the new connection fails as before (mode=rw)."""
        try:
            inode = os.stat(self.path).st_ino
        except OSError:
            inode = None
        conn = None
        with self._pool_lock:
            while self._idle and conn is None:
                candidate, candidate_inode = self._idle.pop()
                if candidate_inode == inode:
                    conn = candidate
                else:
                    candidate.close()
        if conn is None:
            conn = self._connect()
        try:
            yield conn
        except BaseException as exc:
            if not isinstance(exc, OrderError) or conn.in_transaction:
                conn.close()
                raise
            self._release(conn, inode)
            raise
        self._release(conn, inode)

    def _release(self, conn: sqlite3.Connection, inode: int | None) -> None:
        with self._pool_lock:
            if inode is not None and len(self._idle) < IDLE_CONNECTIONS:
                self._idle.append((conn, inode))
                return
        conn.close()

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._connection() as conn:
            yield conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction: committed on success, rolled back on any error."""
        with self._write_lock, self._connection() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def ping(self) -> None:
        """Raise sqlite3.Error unless the database opens and has its tables (on a new
        connection, so a database gone from disk is noticed)."""
        with closing(self._connect()) as conn:
            conn.execute("SELECT 1 FROM orders LIMIT 1").fetchall()

    # -- orders ----------------------------------------------------------------------

    def create(
        self, user_id: Any, items: Any, idempotency_key: Any
    ) -> tuple[dict[str, Any], bool]:
        """(order, created). A known idempotency_key returns the first order, created=False,
        whatever the other arguments say this time."""
        key = _text("idempotency_key", idempotency_key)
        user = _user_id(user_id)
        lines = _items(items)
        total = sum(line["qty"] * line["unit_price_cents"] for line in lines)
        with self._write() as conn:
            row = conn.execute(
                "SELECT * FROM orders WHERE idempotency_key = ?", (key,)
            ).fetchone()
            if row is not None:
                return _order(row), False
            now = _now()
            cur = conn.execute(
                "INSERT INTO orders (user_id, items, total_cents, status, idempotency_key,"
                " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (user, json.dumps(lines), total, PENDING, key, now, now),
            )
            order = _order(_get_row(conn, cur.lastrowid))
            _owe_event(conn, CREATED_EVENT, order)
            return order, True

    def get(self, order_id: Any) -> dict[str, Any]:
        with self._read() as conn:
            return _order(_get_row(conn, _order_id(order_id)))

    def list_orders(self, user_id: Any = None, limit: Any = 50) -> list[dict[str, Any]]:
        """Newest first, optionally only one user's orders."""
        if isinstance(limit, bool) or not isinstance(limit, int) or not (
            1 <= limit <= MAX_LIST_LIMIT
        ):
            raise InvalidOrder(f"limit must be an integer from 1 to {MAX_LIST_LIMIT}")
        with self._read() as conn:
            if user_id is None:
                rows = conn.execute(
                    "SELECT * FROM orders ORDER BY id DESC LIMIT ?", (limit,)
                ).fetchall()
            else:
                rows = conn.execute(
                    "SELECT * FROM orders WHERE user_id = ? ORDER BY id DESC LIMIT ?",
                    (_user_id(user_id), limit),
                ).fetchall()
        return [_order(row) for row in rows]

    def transition(
        self, order_id: Any, target: str, reason: Any = None
    ) -> tuple[dict[str, Any], bool]:
        """(order, changed): move the order to `target` following TRANSITIONS.

        Already in `target`: returned unchanged, changed=False (the first reason stays).
        Not allowed from its current state: InvalidTransition.
        """
        allowed_from, event_type = TRANSITIONS[target]
        oid = _order_id(order_id)
        if reason is not None or target in REASON_REQUIRED:
            reason = _text("reason", reason)
        with self._write() as conn:
            current = _order(_get_row(conn, oid))
            if current["status"] == target:
                return current, False
            if current["status"] not in allowed_from:
                raise InvalidTransition(
                    f"order {oid} is {current['status']}; it cannot become {target}"
                )
            conn.execute(
                "UPDATE orders SET status = ?, reason = ?, updated_at = ? WHERE id = ?",
                (target, reason, _now(), oid),
            )
            order = _order(_get_row(conn, oid))
            _owe_event(conn, event_type, order)
            return order, True

    # -- outbox ----------------------------------------------------------------------

    def pending_events(self, limit: int = 100) -> list[PendingEvent]:
        """Events committed but not yet published, oldest first."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT id, event_type, payload FROM outbox ORDER BY id LIMIT ?", (limit,)
            ).fetchall()
        return [PendingEvent(row["id"], row["event_type"], json.loads(row["payload"]))
                for row in rows]

    def mark_published(self, event_id: int) -> None:
        with self._write() as conn:
            conn.execute("DELETE FROM outbox WHERE id = ?", (event_id,))


# -- row helpers (called inside a transaction) -----------------------------------------

def _get_row(conn: sqlite3.Connection, order_id: int) -> sqlite3.Row:
    row = conn.execute("SELECT * FROM orders WHERE id = ?", (order_id,)).fetchone()
    if row is None:
        raise OrderNotFound(f"no order with id {order_id}")
    return row


def _order(row: sqlite3.Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "user_id": row["user_id"],
        "items": json.loads(row["items"]),
        "total_cents": row["total_cents"],
        "status": row["status"],
        "reason": row["reason"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


def _owe_event(conn: sqlite3.Connection, event_type: str, order: dict[str, Any]) -> None:
    conn.execute(
        "INSERT INTO outbox (event_type, payload, created_at) VALUES (?, ?, ?)",
        (event_type, json.dumps(order), _now()),
    )


# -- validation ------------------------------------------------------------------------

def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _text(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_TEXT:
        raise InvalidOrder(f"{name} must be a non-empty string of at most {MAX_TEXT} characters")
    return value


def _user_id(value: Any) -> str:
    # JWT subjects are strings; an integer id is accepted and kept as its decimal text.
    if _is_int(value):
        return str(value)
    return _text("user_id", value)


def _order_id(value: Any) -> int:
    if not _is_int(value) or value < 1:
        raise InvalidOrder(f"order_id must be a positive integer, got {value!r}")
    return value


def _items(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value:
        raise InvalidOrder("items must be a non-empty list")
    if len(value) > MAX_ITEMS:
        raise InvalidOrder(f"an order holds at most {MAX_ITEMS} items")
    lines = []
    for index, item in enumerate(value):
        where = f"items[{index}]"
        if not isinstance(item, dict) or set(item) != ITEM_KEYS:
            raise InvalidOrder(f"{where} must have exactly the keys {sorted(ITEM_KEYS)}")
        sku, qty, price = item["sku"], item["qty"], item["unit_price_cents"]
        if not isinstance(sku, str) or not sku.strip() or len(sku) > MAX_TEXT:
            raise InvalidOrder(f"{where}.sku must be a non-empty string")
        if not _is_int(qty) or not (1 <= qty <= MAX_QTY):
            raise InvalidOrder(f"{where}.qty must be an integer from 1 to {MAX_QTY}")
        if not _is_int(price) or not (0 <= price <= MAX_UNIT_PRICE_CENTS):
            raise InvalidOrder(
                f"{where}.unit_price_cents must be an integer from 0 to {MAX_UNIT_PRICE_CENTS}"
            )
        lines.append({"sku": sku, "qty": qty, "unit_price_cents": price})
    return lines
