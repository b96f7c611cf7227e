"""The `orders` nameko service: RPC and events over AMQP, health and metrics over HTTP.

RPC (exchange nameko-rpc, routing key orders.<method>); every method returns an order
dict {id, user_id, items, total_cents, status, reason, created_at, updated_at} (or a
list of them) and raises InvalidOrder, OrderNotFound or InvalidTransition, which
callers receive as a remote error of that type. Every method needs a service
credential for orders in its context data (shopkit.nameko_kit.service_rpc) whose scope
is the method's name (the saga actions create_order, ship_order, cancel_order in
shop.yaml); a call without one gets the remote error Unauthenticated, with one for
another service or method PermissionDenied, and runs nothing:

    create_order(user_id, items, idempotency_key)    a PENDING order; same key -> same order
    get_order(order_id)
    list_orders(user_id=None, limit=50)               newest first
    ship_order(order_id)                              PENDING -> SHIPPED
    cancel_order(order_id, reason=None)               PENDING -> CANCELLED
    fail_order(order_id, reason)                      PENDING -> FAILED

The state machine is documented in store.py. Events (exchange orders.events, routing key
= event type, payload = the order): order_created, order_shipped, order_cancelled,
order_failed, one per real state change and none for an idempotent repeat.

HTTP: GET /health -> 200 {"status": "ok", "service": "orders", "checks": {...}} when RPC
is being served, the database opens and the broker answers, else 503 with the failing
check named; GET /metrics -> Prometheus text (see providers.RequestMetrics).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading

from nameko.events import EventDispatcher
from nameko.timer import timer
from nameko.web.handlers import http
from providers import BrokerProbe, RequestMetrics, Store
from shopkit.metrics import exposition
from shopkit.nameko_kit import service_rpc
from store import (
    CANCELLED,
    FAILED,
    MAX_TEXT,
    SHIPPED,
    InvalidOrder,
    InvalidTransition,
    OrderNotFound,
)

log = logging.getLogger(__name__)

DOMAIN_ERRORS = (InvalidOrder, OrderNotFound, InvalidTransition)
OUTBOX_RETRY_SECONDS = 5

# One publisher at a time keeps events in commit order and never sends a row twice
# (workers are green threads of one process; eventlet makes this lock green).
_publish_lock = threading.Lock()

# Set by main.py once the runner has started every extension, and cleared when it
# starts stopping. Nameko starts its extensions concurrently, so the HTTP server can
# answer before the RPC queue is consumed; /health must not say "ok" in that window.
serving = threading.Event()


class OrdersService:
    name = "orders"

    store = Store()
    dispatch = EventDispatcher()
    broker = BrokerProbe()
    request_metrics = RequestMetrics()

    @service_rpc(expected_exceptions=DOMAIN_ERRORS)
    def create_order(self, user_id, items, idempotency_key):
        order, _ = self.store.create(user_id, items, idempotency_key)
        self._publish_pending_events()
        return order

    @service_rpc(expected_exceptions=DOMAIN_ERRORS)
    def get_order(self, order_id):
        return self.store.get(order_id)

    @service_rpc(expected_exceptions=DOMAIN_ERRORS)
    def list_orders(self, user_id=None, limit=50):
        return self.store.list_orders(user_id, limit)

    @service_rpc(expected_exceptions=DOMAIN_ERRORS)
    def ship_order(self, order_id):
        return self._transition(order_id, SHIPPED)

    @service_rpc(expected_exceptions=DOMAIN_ERRORS)
    def cancel_order(self, order_id, reason=None):
        # A saga passes its failure as the reason, which can be long; the reason only
        # informs, so it is cut to fit rather than refusing the cancellation.
        if isinstance(reason, str):
            reason = reason[:MAX_TEXT]
        return self._transition(order_id, CANCELLED, reason)

    @service_rpc(expected_exceptions=DOMAIN_ERRORS)
    def fail_order(self, order_id, reason):
        return self._transition(order_id, FAILED, reason)

    @timer(interval=OUTBOX_RETRY_SECONDS)
    def retry_pending_events(self):
        """Publish events a broker failure left in the outbox (and any left by a crash)."""
        self._publish_pending_events()

    @http("GET", "/health")
    def health(self, request):
        checks = {"rpc": "ok" if serving.is_set() else "not serving", "db": "ok", "amqp": "ok"}
        try:
            self.store.ping()
        except sqlite3.Error as exc:
            checks["db"] = f"unavailable: {exc}"
        if not self.broker.ok():
            checks["amqp"] = "unreachable"
        healthy = all(value == "ok" for value in checks.values())
        body = {"status": "ok" if healthy else "unavailable", "service": self.name,
                "checks": checks}
        return 200 if healthy else 503, {"Content-Type": "application/json"}, json.dumps(body)

    @http("GET", "/metrics")
    def metrics(self, request):
        body, content_type = exposition()
        return 200, {"Content-Type": content_type}, body.decode()

    def _transition(self, order_id, target, reason=None):
        order, _ = self.store.transition(order_id, target, reason)
        self._publish_pending_events()
        return order

    def _publish_pending_events(self):
        """Publish outbox events in order; stop at the first failure and leave the rest
        for the next call or the retry timer. The caller's change is committed either way,
        so a broker failure here must not fail the RPC."""
        with _publish_lock:
            for event in self.store.pending_events():
                try:
                    self.dispatch(event.event_type, event.payload)
                except Exception as exc:
                    log.warning("event publish failed; will retry",
                                extra={"event": event.event_type, "error": str(exc)})
                    return
                self.store.mark_published(event.id)
