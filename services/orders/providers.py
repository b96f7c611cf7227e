"""Nameko dependency providers of the orders service.

Each is set up once per container (process) and shared by all workers, which nameko runs
as green threads.
"""

from __future__ import annotations

import time
from pathlib import Path
from weakref import WeakKeyDictionary

from health import AmqpProbe
from nameko.constants import AMQP_URI_CONFIG_KEY
from nameko.extensions import DependencyProvider
from nameko.rpc import Rpc
from nameko.web.handlers import HttpRequestHandler
from shopkit import metrics
from store import OrderStore

DB_PATH_CONFIG_KEY = "ORDERS_DB_PATH"
SERVICE_LABEL_CONFIG_KEY = "SHOP_SERVICE"


class Store(DependencyProvider):
    """Injects the process's OrderStore (path from config ORDERS_DB_PATH)."""

    def setup(self):
        self.store = OrderStore(Path(self.container.config[DB_PATH_CONFIG_KEY]))

    def get_dependency(self, worker_ctx):
        return self.store


class BrokerProbe(DependencyProvider):
    """Injects an AmqpProbe for the broker the container itself uses."""

    def setup(self):
        self.probe = AmqpProbe(self.container.config[AMQP_URI_CONFIG_KEY])

    def get_dependency(self, worker_ctx):
        return self.probe


class RequestMetrics(DependencyProvider):
    """Counts and times every RPC and HTTP worker in shopkit.metrics.

    Labels: RPC -> endpoint=<method name>, method="RPC", status "ok" | "rejected" (an
    expected domain error such as InvalidOrder) | "error" (anything else).
    HTTP -> endpoint=<route>, method=<verb>, status=<HTTP code>. /metrics itself and
    timer workers are not requests and are left out.

    Nameko calls worker_result after the reply has been sent, so a scrape that races
    a call may not count it yet.
    """

    def setup(self):
        self.service_label = self.container.config.get(
            SERVICE_LABEL_CONFIG_KEY, self.container.service_name
        )
        self._started: WeakKeyDictionary = WeakKeyDictionary()

    def worker_setup(self, worker_ctx):
        self._started[worker_ctx] = time.perf_counter()

    def worker_result(self, worker_ctx, result=None, exc_info=None):
        started = self._started.pop(worker_ctx, None)
        labels = _labels(worker_ctx.entrypoint, result, exc_info)
        if started is not None and labels is not None:
            endpoint, method, status = labels
            metrics.observe(self.service_label, endpoint, method, status,
                            time.perf_counter() - started)


def _labels(entrypoint, result, exc_info) -> tuple[str, str, str | int] | None:
    if isinstance(entrypoint, Rpc):
        if exc_info is None:
            status = "ok"
        elif isinstance(exc_info[1], entrypoint.expected_exceptions):
            status = "rejected"
        else:
            status = "error"
        return entrypoint.method_name, "RPC", status
    if isinstance(entrypoint, HttpRequestHandler) and entrypoint.url != "/metrics":
        if exc_info is not None:
            status = 500
        elif isinstance(result, tuple):  # (status, [headers,] body), see nameko.web
            status = result[0]
        else:
            status = 200
        return entrypoint.url, entrypoint.method, status
    return None
