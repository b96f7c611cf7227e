"""Is the broker reachable? A cheap, cached answer for the /health endpoint.

Consul polls /health every few seconds and several checkers may poll at once, so the
answer is kept for `ttl` seconds instead of opening a connection per request.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import kombu

log = logging.getLogger(__name__)


class AmqpProbe:
    """`ok()` is True when a fresh AMQP connection to `amqp_uri` opens within `timeout`."""

    def __init__(
        self,
        amqp_uri: str,
        *,
        ttl: float = 2.0,
        timeout: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.amqp_uri = amqp_uri
        self.ttl = ttl
        self.timeout = timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._checked_at: float | None = None
        self._ok = False

    def ok(self) -> bool:
        with self._lock:
            now = self._clock()
            if self._checked_at is None or now - self._checked_at >= self.ttl:
                self._ok = self._connects()
                self._checked_at = now
            return self._ok

    def _connects(self) -> bool:
        try:
            with kombu.Connection(self.amqp_uri, connect_timeout=self.timeout) as conn:
                # One attempt, no back-off: a health check must answer quickly.
                conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0,
                                       timeout=self.timeout)
            return True
        except Exception as exc:  # any failure to connect means "unhealthy", never a crash
            log.warning("amqp health check failed", extra={"error": str(exc)})
            return False
