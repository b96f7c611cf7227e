"""The stock ledger: stock levels and per-order reservations in SQLite, free of gRPC.

Tables
    stock(sku, available, reserved)           one row a product, seeded from shopkit.seed
    reservations(order_id, state)             one row an order: RESERVED or RELEASED
    reservation_items(order_id, sku, quantity) what a reservation holds

An order's state lives on its `reservations` row rather than on each item because a
reservation is all-or-nothing: its items are reserved and released together.

Idempotency (the saga calls every step with a key derived from saga id + step; here
that key is the order_id):
  * `reserve` applies once per order_id. A repeat returns ALREADY_RESERVED with the
    items first reserved and changes nothing, even when it asks for other items.
    A refused reserve (bad input, short stock) records nothing, so it may be retried.
  * `release` applies once per order_id. A repeat returns ALREADY_RELEASED.
  * Releasing an order that never reserved anything records a tombstone (a RELEASED row
    without items) and returns NOT_FOUND.

Late reserves. A saga whose reserve call timed out compensates with a release; the
reserve may still reach us afterwards. Had it been applied, its stock would stay held
forever, since the saga already ran its compensation. So once an order_id is released
(tombstone or real release) every later reserve for it is refused with `OrderReleased`:
released is final, and an order that wants stock again needs a new order_id.

Concurrency. Every write runs in one `BEGIN IMMEDIATE` transaction, which takes SQLite's
write lock before reading, so check-then-decrement cannot interleave with another
writer, even in another process on the same file. Within the process one connection is
shared behind a lock: writers queue on the lock instead of spinning in SQLite's busy
handler. The CHECK constraints keep stock from going negative whatever the code does.

Bounds. A request names at most MAX_ITEMS items, SKUs of at most MAX_SKU characters and
an order_id of at most MAX_ORDER_ID (InvalidRequest otherwise), and an error message
quotes at most MAX_SHOWN_ITEMS of the values it is about, each cut to MAX_SHOWN_CHARS:
10,000 unknown SKUs make a short INVALID_ARGUMENT, not a message too large for the
client (RESOURCE_EXHAUSTED).
"""

from __future__ import annotations

import enum
import logging
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from shopkit.seed import PRODUCTS, SeedProduct

log = logging.getLogger(__name__)

MAX_ITEMS = 1000  # also keeps reserve's `IN (?, ...)` within SQLite's variable limit
MAX_SKU = 64
MAX_ORDER_ID = 128
MAX_SHOWN_ITEMS = 10
MAX_SHOWN_CHARS = 64

_SCHEMA = """
CREATE TABLE IF NOT EXISTS stock (
    sku       TEXT PRIMARY KEY,
    available INTEGER NOT NULL CHECK (available >= 0),
    reserved  INTEGER NOT NULL DEFAULT 0 CHECK (reserved >= 0)
);
CREATE TABLE IF NOT EXISTS reservations (
    order_id   TEXT PRIMARY KEY,
    state      TEXT NOT NULL CHECK (state IN ('RESERVED', 'RELEASED')),
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE TABLE IF NOT EXISTS reservation_items (
    order_id TEXT NOT NULL REFERENCES reservations (order_id),
    sku      TEXT NOT NULL REFERENCES stock (sku),
    quantity INTEGER NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (order_id, sku)
);
"""


@dataclass(frozen=True)
class Item:
    sku: str
    quantity: int


@dataclass(frozen=True)
class StockLevel:
    sku: str
    available: int
    reserved: int


@dataclass(frozen=True)
class Shortage:
    sku: str
    requested: int
    available: int


class ReserveOutcome(enum.Enum):
    RESERVED = "RESERVED"
    ALREADY_RESERVED = "ALREADY_RESERVED"


class ReleaseOutcome(enum.Enum):
    RELEASED = "RELEASED"
    ALREADY_RELEASED = "ALREADY_RELEASED"
    NOT_FOUND = "NOT_FOUND"


@dataclass(frozen=True)
class Reservation:
    order_id: str
    outcome: ReserveOutcome
    items: tuple[Item, ...]


@dataclass(frozen=True)
class Release:
    order_id: str
    outcome: ReleaseOutcome
    items: tuple[Item, ...]


class LedgerError(Exception):
    """A request the ledger refuses; nothing was changed."""


class InvalidRequest(LedgerError):
    """The request is malformed; retrying it unchanged cannot succeed."""


def shown(value: str, limit: int = MAX_SHOWN_CHARS) -> str:
    """`value` as an error message quotes it: cut to `limit` characters."""
    return value if len(value) <= limit else value[:limit] + "..."


def listing(values: Sequence[str], limit: int = MAX_SHOWN_ITEMS) -> str:
    """The first `limit` values, each cut short, and how many more there are: an error
    message stays small however many a request names (a gRPC status message travels in
    the trailers, which a default client caps at 8 KiB)."""
    text = ", ".join(shown(value) for value in values[:limit])
    more = len(values) - limit
    return f"{text} and {more} more" if more > 0 else text


class UnknownSku(InvalidRequest):
    def __init__(self, skus: Sequence[str]):
        self.skus = tuple(skus)
        super().__init__(f"unknown SKU: {listing(self.skus)}")


class InsufficientStock(LedgerError):
    def __init__(self, shortages: Sequence[Shortage]):
        self.shortages = tuple(shortages)
        detail = listing([
            f"{s.sku} (requested {s.requested}, available {s.available})" for s in self.shortages
        ])
        super().__init__(f"insufficient stock: {detail}")


class OrderReleased(LedgerError):
    def __init__(self, order_id: str):
        self.order_id = order_id
        super().__init__(f"order {order_id!r} was released; reserve under a new order_id")


class StockLedger:
    """The inventory's state. Thread-safe; open with `StockLedger.open(path)`."""

    def __init__(self, conn: sqlite3.Connection):
        self._conn = conn
        self._lock = threading.Lock()

    @classmethod
    def open(cls, path: Path, products: Iterable[SeedProduct] = PRODUCTS) -> StockLedger:
        """Open (creating when needed) the database at `path` and seed missing products.

        Seeding only inserts SKUs the table lacks, so restarts keep the stock as it was
        and a product added to the seed list later still appears.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: transactions are begun explicitly (BEGIN IMMEDIATE)
        # rather than implicitly by the sqlite3 module. The connection is used from the
        # server's worker threads, always under the ledger's lock.
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA busy_timeout=5000")
            conn.executescript(_SCHEMA)
            ledger = cls(conn)
            with ledger._write() as db:
                db.executemany(
                    "INSERT OR IGNORE INTO stock (sku, available, reserved) VALUES (?, ?, 0)",
                    [(p.sku, p.initial_stock) for p in products],
                )
        except BaseException:
            conn.close()
            raise
        return ledger

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def levels(self, skus: Sequence[str] = ()) -> list[StockLevel]:
        """Stock of `skus` in the order given, or of every SKU (by SKU) when empty."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT sku, available, reserved FROM stock ORDER BY sku"
            ).fetchall()
        by_sku = {row[0]: StockLevel(*row) for row in rows}
        if not skus:
            return list(by_sku.values())
        unknown = [sku for sku in skus if sku not in by_sku]
        if unknown:
            raise UnknownSku(unknown)
        return [by_sku[sku] for sku in skus]

    def reserve(self, order_id: str, items: Sequence[Item]) -> Reservation:
        """Reserve all of `items` for `order_id`, or nothing (see the module docstring).

        Raises InvalidRequest (UnknownSku included), InsufficientStock, OrderReleased.
        """
        _check_order_id(order_id)
        _check_items(items)
        with self._write() as db:
            row = db.execute(
                "SELECT state FROM reservations WHERE order_id = ?", (order_id,)
            ).fetchone()
            if row is not None and row[0] == "RELEASED":
                log.warning(
                    "late reserve refused: order already released", extra={"order_id": order_id}
                )
                raise OrderReleased(order_id)
            if row is not None:
                held = _items_of(db, order_id)
                if set(held) != set(items):
                    log.warning(
                        "repeated reserve with other items; keeping the first",
                        extra={"order_id": order_id},
                    )
                return Reservation(order_id, ReserveOutcome.ALREADY_RESERVED, held)

            available = dict(
                db.execute(
                    f"SELECT sku, available FROM stock WHERE sku IN ({_marks(len(items))})",
                    [item.sku for item in items],
                ).fetchall()
            )
            unknown = [item.sku for item in items if item.sku not in available]
            if unknown:
                raise UnknownSku(unknown)
            shortages = [
                Shortage(item.sku, item.quantity, available[item.sku])
                for item in items
                if item.quantity > available[item.sku]
            ]
            if shortages:
                raise InsufficientStock(shortages)

            db.executemany(
                "UPDATE stock SET available = available - ?, reserved = reserved + ? WHERE sku = ?",
                [(item.quantity, item.quantity, item.sku) for item in items],
            )
            db.execute(
                "INSERT INTO reservations (order_id, state) VALUES (?, 'RESERVED')", (order_id,)
            )
            db.executemany(
                "INSERT INTO reservation_items (order_id, sku, quantity) VALUES (?, ?, ?)",
                [(order_id, item.sku, item.quantity) for item in items],
            )
        log.info("stock reserved", extra={"order_id": order_id, "items": len(items)})
        return Reservation(order_id, ReserveOutcome.RESERVED, tuple(items))

    def release(self, order_id: str) -> Release:
        """Return `order_id`'s reserved items to stock, once (see the module docstring)."""
        _check_order_id(order_id)
        with self._write() as db:
            row = db.execute(
                "SELECT state FROM reservations WHERE order_id = ?", (order_id,)
            ).fetchone()
            if row is None:
                db.execute(
                    "INSERT INTO reservations (order_id, state) VALUES (?, 'RELEASED')",
                    (order_id,),
                )
                log.info("release of an unknown order recorded", extra={"order_id": order_id})
                return Release(order_id, ReleaseOutcome.NOT_FOUND, ())
            held = _items_of(db, order_id)
            if row[0] == "RELEASED":
                # A tombstone stays NOT_FOUND: the order never held stock.
                outcome = ReleaseOutcome.ALREADY_RELEASED if held else ReleaseOutcome.NOT_FOUND
                return Release(order_id, outcome, held)
            db.executemany(
                "UPDATE stock SET available = available + ?, reserved = reserved - ? WHERE sku = ?",
                [(item.quantity, item.quantity, item.sku) for item in held],
            )
            db.execute(
                "UPDATE reservations SET state = 'RELEASED',"
                " updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE order_id = ?",
                (order_id,),
            )
        log.info("stock released", extra={"order_id": order_id, "items": len(held)})
        return Release(order_id, ReleaseOutcome.RELEASED, held)


def _check_order_id(order_id: str) -> None:
    if not order_id or not order_id.strip():
        raise InvalidRequest("order_id is required")
    if len(order_id) > MAX_ORDER_ID:
        raise InvalidRequest(f"order_id is longer than {MAX_ORDER_ID} characters")


def _check_items(items: Sequence[Item]) -> None:
    if not items:
        raise InvalidRequest("at least one item is required")
    if len(items) > MAX_ITEMS:
        raise InvalidRequest(f"at most {MAX_ITEMS} items, got {len(items)}")
    seen: set[str] = set()
    for item in items:
        if not item.sku:
            raise InvalidRequest("every item needs a sku")
        if len(item.sku) > MAX_SKU:
            raise InvalidRequest(f"SKU {shown(item.sku)} is longer than {MAX_SKU} characters")
        if item.quantity <= 0:
            raise InvalidRequest(f"quantity of {item.sku} must be > 0, got {item.quantity}")
        if item.sku in seen:
            raise InvalidRequest(f"{item.sku} is listed twice; send one item per SKU")
        seen.add(item.sku)


def _items_of(db: sqlite3.Connection, order_id: str) -> tuple[Item, ...]:
    rows = db.execute(
        "SELECT sku, quantity FROM reservation_items WHERE order_id = ? ORDER BY rowid",
        (order_id,),
    ).fetchall()
    return tuple(Item(sku, quantity) for sku, quantity in rows)


def _marks(count: int) -> str:
    return ", ".join("?" * count)
