"""Charge and refund use cases: the ledger and the guarded provider, in the right order.

Never charge twice: the charge is recorded (PENDING, with its provider token) before
the provider is called. An attempt that got no answer leaves it PENDING, and the next
attempt, or a refund, first asks the provider whether that token was charged. Only an
attempt known to have charged nothing (a provider error or an open breaker) marks it
FAILED, which lets the next attempt charge straight away.

Requests for the same order are serialised by the ledger's order lock, across every
replica of the service when they share a PostgreSQL database (db.py): a retry cannot
overtake the attempt it repeats, nor can a refund void a charge between its PENDING
record and the provider's answer (the charge would take money the refund said was
never taken).
"""

from __future__ import annotations

from breaker import PROVIDER_TIMEOUT, GuardedProvider, Unavailable
from ledger import FINAL, Charge, ChargeStatus, Ledger, Refund, RefundStatus


class Payments:
    def __init__(self, ledger: Ledger, provider: GuardedProvider):
        self._ledger = ledger
        self._provider = provider

    def charge(self, order_id: str, amount_cents: int, currency: str,
               idempotency_key: str | None) -> tuple[Charge, bool]:
        """Charge the order once; returns (charge, fresh).

        `fresh` is False when the charge was settled by an earlier request and is
        returned as it was. Raises ledger.Conflict and breaker.Unavailable.
        """
        with self._ledger.order_lock(order_id):
            charge, previous = self._ledger.open_charge(order_id, amount_cents, currency,
                                                        idempotency_key)
            if previous in FINAL:
                return charge, False
            in_doubt = previous is ChargeStatus.PENDING
            try:
                outcome = None
                if in_doubt:
                    outcome = self._provider.find(charge.token)
                    in_doubt = False  # the provider answered, so we know what it did
                if outcome is None:
                    outcome = self._provider.charge(charge.token, amount_cents, currency)
            except Unavailable as exc:
                # A timeout may have charged; so may the earlier attempt if the look-up
                # failed. Both stay PENDING for the next attempt to look up.
                if not in_doubt and exc.reason != PROVIDER_TIMEOUT:
                    self._ledger.settle_charge(order_id, ChargeStatus.FAILED)
                raise
            status = ChargeStatus.SUCCEEDED if outcome.captured else ChargeStatus.DECLINED
            return self._ledger.settle_charge(order_id, status), True

    def refund(self, order_id: str, idempotency_key: str | None) -> Refund:
        """Refund the order's charge once; an order with nothing charged gets
        NOTHING_TO_REFUND. Raises ledger.Conflict and breaker.Unavailable."""
        with self._ledger.order_lock(order_id):
            existing = self._ledger.refund(order_id, idempotency_key)
            if existing is not None:
                return existing
            charge = self._ledger.charge(order_id)
            if charge is not None and charge.status is ChargeStatus.PENDING:
                found = self._provider.find(charge.token)
                if found is not None:
                    status = ChargeStatus.SUCCEEDED if found.captured else ChargeStatus.DECLINED
                    charge = self._ledger.settle_charge(order_id, status)
            if charge is None or charge.status is not ChargeStatus.SUCCEEDED:
                return self._ledger.record_refund(order_id, 0, RefundStatus.NOTHING_TO_REFUND,
                                                  idempotency_key)
            self._provider.refund(charge.token)
            return self._ledger.record_refund(order_id, charge.amount_cents,
                                              RefundStatus.REFUNDED, idempotency_key)
