"""Wiring for callers (the CLI, tests, benchmarks): a log, live actions and an outbox
publisher for one project, opened and closed together."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from shopctl.saga.actions import ServiceActions
from shopctl.saga.endpoints import Endpoints
from shopctl.saga.engine import Engine
from shopctl.saga.log import SagaLog, StepEvent
from shopctl.saga.outbox import OutboxPublisher

EVENT_SOURCE = "saga"  # events go to the "saga.events" exchange


@contextmanager
def open_engine(db_path, endpoints: Endpoints, kinds: dict[str, str], *,
                on_event: Callable[[StepEvent], None] | None = None,
                on_unpublished: Callable[[int, str | None], None] | None = None,
                publish_timeout: float = 5.0,
                synchronous: str | None = None) -> Iterator[Engine]:
    """An Engine on the log at `db_path` calling the live services at `endpoints`, with
    a publisher (engine.publisher) sending the log's outbox to RabbitMQ (also what
    earlier runs left).
    On exit the outbox is flushed for up to `publish_timeout` seconds; events still
    unsent then stay in the log, and `on_unpublished(count, last_error)` hears of them.
    `synchronous`: the log's durability, NORMAL or FULL (see shopctl.saga.log)."""
    from shopctl.nameko_rpc import NamekoRpc

    log = SagaLog(db_path, synchronous=synchronous)
    actions = ServiceActions(endpoints, kinds)
    events = NamekoRpc(endpoints.orders_amqp, timeout=publish_timeout,
                       client_name="shopctl-saga-events")

    def send(event_type: str, message: dict[str, Any]) -> None:
        events.publish_event(EVENT_SOURCE, event_type, message)

    publisher = OutboxPublisher(log, send).start()
    try:
        yield Engine(log, actions, publisher=publisher, on_event=on_event)
    finally:
        left = publisher.close(publish_timeout)
        if left and on_unpublished is not None:
            on_unpublished(left, publisher.last_error)
        events.close()
        actions.close()
        log.close()
