"""Wiring for callers (the CLI, tests, benchmarks): a log, live actions and an event
publisher for one project, opened and closed together."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from shopctl.saga.actions import ServiceActions
from shopctl.saga.endpoints import Endpoints
from shopctl.saga.engine import Engine
from shopctl.saga.log import SagaLog, StepEvent

EVENT_SOURCE = "saga"  # events go to the "saga.events" exchange


@contextmanager
def open_engine(db_path, endpoints: Endpoints, kinds: dict[str, str], *,
                on_event: Callable[[StepEvent], None] | None = None,
                publish_timeout: float = 5.0,
                synchronous: str | None = None) -> Iterator[Engine]:
    """An Engine on the log at `db_path` calling the live services at `endpoints`.
    `synchronous` is the log's SQLite setting (FULL unless set; see shopctl.saga.log)."""
    from shopctl.nameko_rpc import NamekoRpc

    log = SagaLog(db_path, synchronous=synchronous)
    actions = ServiceActions(endpoints, kinds)
    events = NamekoRpc(endpoints.orders_amqp, timeout=publish_timeout,
                       client_name="shopctl-saga-events")

    def publish(event_type: str, payload: dict[str, Any]) -> None:
        events.publish_event(EVENT_SOURCE, event_type, payload)

    try:
        yield Engine(log, actions, publish=publish, on_event=on_event)
    finally:
        events.close()
        actions.close()
        log.close()
