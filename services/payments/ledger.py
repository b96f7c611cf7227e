"""The service's own record of charges and refunds (tables charges, refunds).

One charge and at most one refund per order: the order id is the idempotency key of
both operations. An optional Idempotency-Key header value is stored with the first
request; presenting it again for a different order is a conflict.

Charge status:
    PENDING    a provider call is in flight, or its answer never came: in doubt,
               settled by looking the token up at the provider
    FAILED     the last attempt failed without charging; a retry charges again
    SUCCEEDED  money taken (final)
    DECLINED   the card was declined (final)
    VOIDED     the order was refunded before any charge succeeded; it stays uncharged

Once an order has a refund record it can no longer be charged: a saga that
compensated an order must not see it charged by a late retry.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum

import db

SCHEMA = """
CREATE TABLE IF NOT EXISTS charges (
    order_id        TEXT PRIMARY KEY,
    charge_id       TEXT NOT NULL UNIQUE,
    token           TEXT NOT NULL UNIQUE,
    amount_cents    BIGINT NOT NULL CHECK (amount_cents > 0),
    currency        TEXT NOT NULL,
    status          TEXT NOT NULL,
    idempotency_key TEXT UNIQUE,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS refunds (
    order_id        TEXT PRIMARY KEY,
    refund_id       TEXT UNIQUE,
    amount_cents    BIGINT NOT NULL,
    status          TEXT NOT NULL,
    idempotency_key TEXT UNIQUE,
    created_at      TEXT NOT NULL
);
"""


class ChargeStatus(StrEnum):
    PENDING = "PENDING"
    FAILED = "FAILED"
    SUCCEEDED = "SUCCEEDED"
    DECLINED = "DECLINED"
    VOIDED = "VOIDED"


FINAL = frozenset({ChargeStatus.SUCCEEDED, ChargeStatus.DECLINED})


class RefundStatus(StrEnum):
    REFUNDED = "REFUNDED"
    NOTHING_TO_REFUND = "NOTHING_TO_REFUND"


class Conflict(Exception):
    """The request contradicts what was recorded for this order or key."""


@dataclass(frozen=True)
class Charge:
    charge_id: str
    order_id: str
    token: str
    amount_cents: int
    currency: str
    status: ChargeStatus
    created_at: str
    updated_at: str

    def public(self) -> dict:
        """The charge as API responses show it (the provider token stays internal)."""
        return {
            "charge_id": self.charge_id,
            "order_id": self.order_id,
            "amount_cents": self.amount_cents,
            "currency": self.currency,
            "status": str(self.status),
        }


@dataclass(frozen=True)
class Refund:
    refund_id: str | None
    order_id: str
    amount_cents: int
    status: RefundStatus
    created_at: str

    def public(self) -> dict:
        return {
            "refund_id": self.refund_id,
            "order_id": self.order_id,
            "amount_cents": self.amount_cents,
            "status": str(self.status),
        }


class Ledger:
    def __init__(self, database: db.Database):
        self._db = database
        database.init_schema(SCHEMA)

    def order_lock(self, order_id: str):
        """Context manager: the requests of `order_id` one at a time, across replicas."""
        return self._db.order_lock(order_id)

    def ping(self) -> None:
        """Raise if the database cannot be read."""
        with self._db.transaction() as conn:
            conn.execute("SELECT 1 FROM charges LIMIT 1").fetchall()

    def open_charge(self, order_id: str, amount_cents: int, currency: str,
                    idempotency_key: str | None) -> tuple[Charge, ChargeStatus | None]:
        """Record the intent to charge, before the provider is called.

        Returns the charge and the status it had before (None if new). A settled
        charge is returned unchanged; otherwise it is (again) PENDING. Raises
        Conflict for another amount or currency than the first request's, a key
        already used for another order, or an order that was refunded.
        """
        with self._db.transaction(write=True) as conn:
            if idempotency_key is not None:
                _check_key(conn, "charges", idempotency_key, order_id)
            charge = _charge(conn, order_id)
            if charge is not None and (charge.amount_cents, charge.currency) != (amount_cents,
                                                                                 currency):
                raise Conflict(
                    f"order {order_id} was charged {charge.amount_cents} {charge.currency} "
                    "first; a repeat must carry the same amount and currency"
                )
            if charge is not None and charge.status in FINAL:
                return charge, charge.status
            if conn.execute("SELECT 1 FROM refunds WHERE order_id = ?", (order_id,)).fetchone():
                raise Conflict(f"order {order_id} was refunded; it can no longer be charged")
            stamp = db.now()
            if charge is None:
                conn.execute(
                    "INSERT INTO charges (order_id, charge_id, token, amount_cents, currency,"
                    " status, idempotency_key, created_at, updated_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (order_id, f"ch_{uuid.uuid4().hex}", f"tok_{uuid.uuid4().hex}",
                     amount_cents, currency, ChargeStatus.PENDING, idempotency_key, stamp, stamp),
                )
            else:
                conn.execute(
                    "UPDATE charges SET status = ?, updated_at = ? WHERE order_id = ?",
                    (ChargeStatus.PENDING, stamp, order_id),
                )
            return _charge(conn, order_id), charge.status if charge else None

    def settle_charge(self, order_id: str, status: ChargeStatus) -> Charge:
        with self._db.transaction(write=True) as conn:
            conn.execute(
                "UPDATE charges SET status = ?, updated_at = ? WHERE order_id = ?",
                (status, db.now(), order_id),
            )
            return _charge(conn, order_id)

    def charge(self, order_id: str) -> Charge | None:
        with self._db.transaction() as conn:
            return _charge(conn, order_id)

    def refund(self, order_id: str, idempotency_key: str | None = None) -> Refund | None:
        """The order's refund record, if any; Conflict if the key belongs to another order."""
        with self._db.transaction() as conn:
            if idempotency_key is not None:
                _check_key(conn, "refunds", idempotency_key, order_id)
            row = conn.execute("SELECT * FROM refunds WHERE order_id = ?", (order_id,)).fetchone()
        return _refund(row) if row else None

    def record_refund(self, order_id: str, amount_cents: int, status: RefundStatus,
                      idempotency_key: str | None) -> Refund:
        """Record the order's refund and void its charge if that never succeeded."""
        refund_id = f"re_{uuid.uuid4().hex}" if status is RefundStatus.REFUNDED else None
        with self._db.transaction(write=True) as conn:
            if idempotency_key is not None:
                _check_key(conn, "refunds", idempotency_key, order_id)
            stamp = db.now()
            conn.execute(
                "INSERT INTO refunds (order_id, refund_id, amount_cents, status,"
                " idempotency_key, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                (order_id, refund_id, amount_cents, status, idempotency_key, stamp),
            )
            conn.execute(
                "UPDATE charges SET status = ?, updated_at = ?"
                " WHERE order_id = ? AND status IN (?, ?)",
                (ChargeStatus.VOIDED, stamp, order_id, ChargeStatus.PENDING, ChargeStatus.FAILED),
            )
            row = conn.execute("SELECT * FROM refunds WHERE order_id = ?", (order_id,)).fetchone()
        return _refund(row)


def _check_key(conn: db.Connection, table: str, key: str, order_id: str) -> None:
    row = conn.execute(
        f"SELECT order_id FROM {table} WHERE idempotency_key = ?", (key,)
    ).fetchone()
    if row is not None and row["order_id"] != order_id:
        raise Conflict("this Idempotency-Key was already used for another order")


def _charge(conn: db.Connection, order_id: str) -> Charge | None:
    row = conn.execute(
        "SELECT charge_id, order_id, token, amount_cents, currency, status, created_at,"
        " updated_at FROM charges WHERE order_id = ?",
        (order_id,),
    ).fetchone()
    if row is None:
        return None
    return Charge(**{**dict(row), "status": ChargeStatus(row["status"])})


def _refund(row) -> Refund:
    return Refund(
        refund_id=row["refund_id"],
        order_id=row["order_id"],
        amount_cents=row["amount_cents"],
        status=RefundStatus(row["status"]),
        created_at=row["created_at"],
    )
