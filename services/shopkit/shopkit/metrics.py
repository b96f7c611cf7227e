"""Prometheus metrics every service exposes, with the same names and labels.

    shop_requests_total{service, endpoint, method, status}
    shop_request_duration_seconds{service, endpoint, method}   (histogram)
    shop_breaker_state{service, breaker}     0 closed, 1 open, 2 half_open; only for
                                             services with a circuit breaker (see
                                             export_breaker)

`endpoint` is the route template (/products/{id}), never the raw path, so the label
set stays bounded. `shopctl metrics` reads these names, whatever the service.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import contextmanager

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

REQUESTS = Counter(
    "shop_requests_total",
    "Requests handled, by endpoint and outcome.",
    ["service", "endpoint", "method", "status"],
)
LATENCY = Histogram(
    "shop_request_duration_seconds",
    "Time spent handling a request.",
    ["service", "endpoint", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)

BREAKER_STATE = Gauge(
    "shop_breaker_state",
    "State of a circuit breaker: 0 closed, 1 open, 2 half_open.",
    ["service", "breaker"],
)
BREAKER_CODES = {"closed": 0, "open": 1, "half_open": 2}


def export_breaker(service: str, breaker: str, state: Callable[[], str]) -> None:
    """Export a circuit breaker as shop_breaker_state{service, breaker}. `state()` answers
    closed | open | half_open and is called at scrape time, so the gauge is never stale;
    exporting the same (service, breaker) again (a new app in the same process) rebinds it.
    """
    BREAKER_STATE.labels(service, breaker).set_function(lambda: BREAKER_CODES[state()])


def observe(service: str, endpoint: str, method: str, status: int | str, seconds: float) -> None:
    REQUESTS.labels(service, endpoint, method, str(status)).inc()
    LATENCY.labels(service, endpoint, method).observe(seconds)


@contextmanager
def timed(service: str, endpoint: str, method: str):
    """Time a block; the caller sets `outcome["status"]` (default "ok", "error" on raise)."""
    outcome = {"status": "ok"}
    start = time.perf_counter()
    try:
        yield outcome
    except BaseException:
        outcome["status"] = "error"
        raise
    finally:
        observe(service, endpoint, method, outcome["status"], time.perf_counter() - start)


def exposition() -> tuple[bytes, str]:
    """The /metrics body and its content type."""
    return generate_latest(), CONTENT_TYPE_LATEST


def instrument_flask(app, service: str) -> None:
    """Count and time every Flask request by its URL rule, and serve GET /metrics."""
    from flask import Response, request

    @app.before_request
    def _start_timer():
        request.environ["shopkit.start"] = time.perf_counter()

    @app.after_request
    def _record(response):
        start = request.environ.get("shopkit.start")
        if start is not None and request.url_rule is not None:
            endpoint = request.url_rule.rule
            if endpoint != "/metrics":
                observe(service, endpoint, request.method, response.status_code,
                        time.perf_counter() - start)
        return response

    @app.get("/metrics")
    def _metrics():
        body, ctype = exposition()
        return Response(body, content_type=ctype)


class _RequestMetrics:
    """Plain ASGI middleware: Starlette's BaseHTTPMiddleware (what @app.middleware
    builds) costs more CPU than a small handler itself; this only watches the response
    start go by."""

    def __init__(self, app, service: str):
        self.app = app
        self.service = service

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def watch(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            # The router sets the matched route on this same scope.
            endpoint = getattr(scope.get("route"), "path", None) or "unmatched"
            if endpoint != "/metrics":
                observe(self.service, endpoint, scope["method"], status,
                        time.perf_counter() - start)


def instrument_fastapi(app, service: str) -> None:
    """Count and time every FastAPI request by its route template, and serve GET /metrics."""
    from fastapi import Response

    app.add_middleware(_RequestMetrics, service=service)

    @app.get("/metrics", include_in_schema=False)
    def _metrics():
        body, ctype = exposition()
        return Response(content=body, media_type=ctype)
