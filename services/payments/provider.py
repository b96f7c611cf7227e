"""The simulated card provider, standing in for an external payment API.

Contract, as a real provider with idempotency keys would offer it:
  * Every charge carries a token chosen by the caller. The provider keeps one ledger
    entry per token (table provider_ledger), so charging a known token returns the
    stored outcome and never captures money twice.
  * `find(token)` tells whether a token was charged; the caller uses it to settle a
    call whose answer it never received.
  * A ProviderError means the provider refused the call before doing anything:
    nothing was charged. Only a missing answer (the caller's timeout) leaves the
    outcome in doubt.
  * Charges of an amount ending in 13 cents (e.g. 1013) are declined, as is every
    charge while the `decline` knob is on: a deterministic "card declined".

Fault knobs (faults.py) apply to every operation: `failure_rate` makes a call fail
before it touches the ledger; `latency_ms` delays the answer *after* the ledger was
written, which is how a call that succeeded can still time out on the caller's side.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import db
from faults import FaultStore

CAPTURED = "captured"
DECLINED = "declined"
REFUNDED = "refunded"

SCHEMA = """
CREATE TABLE IF NOT EXISTS provider_ledger (
    token        TEXT PRIMARY KEY,
    provider_ref TEXT NOT NULL UNIQUE,
    amount_cents BIGINT NOT NULL,
    currency     TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('captured', 'declined', 'refunded')),
    created_at   TEXT NOT NULL,
    refunded_at  TEXT
);
"""

T = TypeVar("T")


class ProviderError(Exception):
    """The provider failed the call without charging or refunding anything."""


@dataclass(frozen=True)
class ProviderCharge:
    token: str
    provider_ref: str
    amount_cents: int
    currency: str
    status: str

    @property
    def captured(self) -> bool:
        """Money was taken (it may have been refunded since)."""
        return self.status in (CAPTURED, REFUNDED)


class SimulatedProvider:
    def __init__(self, database: db.Database, faults: FaultStore):
        self._db = database
        self._faults = faults
        # Set on shutdown so answers still waiting out `latency_ms` return at once.
        self._closing = threading.Event()
        database.init_schema(SCHEMA)

    def charge(self, token: str, amount_cents: int, currency: str) -> ProviderCharge:
        """Capture `amount_cents`, or decline; a known token returns its first outcome."""
        def work() -> ProviderCharge:
            status = DECLINED if self._declines(amount_cents) else CAPTURED
            with self._db.transaction(write=True) as conn:
                conn.execute(
                    "INSERT INTO provider_ledger (token, provider_ref, amount_cents, currency,"
                    " status, created_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (token) DO NOTHING",
                    (token, f"pr_{uuid.uuid4().hex}", amount_cents, currency, status, db.now()),
                )
                return _load(conn, token)
        return self._respond(work)

    def find(self, token: str) -> ProviderCharge | None:
        """The outcome recorded under `token`, or None if it was never charged."""
        def work() -> ProviderCharge | None:
            with self._db.transaction() as conn:
                return _load(conn, token)
        return self._respond(work)

    def refund(self, token: str) -> ProviderCharge:
        """Refund the captured charge under `token`; refunding twice changes nothing."""
        def work() -> ProviderCharge:
            with self._db.transaction(write=True) as conn:
                conn.execute(
                    "UPDATE provider_ledger SET status = ?, refunded_at = ?"
                    " WHERE token = ? AND status = ?",
                    (REFUNDED, db.now(), token, CAPTURED),
                )
                charge = _load(conn, token)
            if charge is None or not charge.captured:
                raise LookupError(f"nothing captured under token {token}")
            return charge
        return self._respond(work)

    def captured_count(self) -> int:
        """How many charges really took money (refunded ones included)."""
        with self._db.transaction() as conn:
            row = conn.execute(
                "SELECT COUNT(*) AS n FROM provider_ledger WHERE status IN (?, ?)",
                (CAPTURED, REFUNDED),
            ).fetchone()
        return row["n"]

    def close(self) -> None:
        self._closing.set()

    def _declines(self, amount_cents: int) -> bool:
        return self._faults.current().decline or amount_cents % 100 == 13

    def _respond(self, work: Callable[[], T]) -> T:
        latency_s = self._faults.current().latency_ms / 1000
        try:
            if self._faults.roll_failure():
                raise ProviderError("simulated provider failure")
            return work()
        finally:
            self._closing.wait(latency_s)


def _load(conn: db.Connection, token: str) -> ProviderCharge | None:
    row = conn.execute(
        "SELECT token, provider_ref, amount_cents, currency, status"
        " FROM provider_ledger WHERE token = ?",
        (token,),
    ).fetchone()
    return ProviderCharge(**dict(row)) if row else None
