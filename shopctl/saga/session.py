"""Wiring for callers (the CLI, tests, benchmarks): a log, live actions and an outbox
publisher for one project, opened and closed together."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from shopctl.saga.endpoints import Endpoints
from shopctl.saga.engine import Engine
from shopctl.saga.log import StepEvent
from shopctl.saga.outbox import OutboxPublisher

EVENT_SOURCE = "saga"  # events go to the "saga.events" exchange


@contextmanager
def open_engine(db_path, endpoints: Endpoints, protos=None, *,
                lookup=None,
                on_event: Callable[[StepEvent], None] | None = None,
                on_unpublished: Callable[[int, str | None], None] | None = None,
                publish_timeout: float = 5.0,
                synchronous: str | None = None,
                service_key: str | None = None,
                lease: float | None = None) -> Iterator[Engine]:
    """An Engine on the log at `db_path` (a SQLite file, or a postgresql:// url; see
    shopctl.saga.store) calling the live services at `endpoints` (gRPC
    ones through the .proto files under `protos`), with a publisher (engine.publisher)
    sending the log's outbox to RabbitMQ (also what earlier runs left; without a broker
    the events wait in the log). `lookup(call)`: the ActionSpec of a call whose saga
    was started without one frozen in its definition.
    On exit the outbox is flushed for up to `publish_timeout` seconds; events still
    unsent then stay in the log, and `on_unpublished(count, last_error)` hears of them.
    `synchronous`: the log's durability, NORMAL or FULL (see shopctl.saga.log).
    `lease`: how long a driver holds its sagas without renewal (PostgreSQL only).
    `service_key`: signs the service credential every participant call carries (the
    project's, .shopctl/secrets/service_key); without it calls carry none."""
    from shopctl.nameko_rpc import NamekoRpc
    from shopctl.saga.participants import Participants
    from shopctl.saga.store import open_log
    from shopctl.service_auth import Credentials

    log = open_log(db_path, synchronous=synchronous, lease=lease)
    credentials = Credentials(service_key) if service_key else None
    actions = Participants(endpoints, protos, lookup, credentials)
    events = None
    publisher = None
    if endpoints.amqp:
        events = NamekoRpc(endpoints.amqp, timeout=publish_timeout,
                           client_name="shopctl-saga-events")

        def send(event_type: str, message: dict[str, Any]) -> None:
            events.publish_event(EVENT_SOURCE, event_type, message)

        publisher = OutboxPublisher(log, send).start()
    try:
        yield Engine(log, actions, publisher=publisher, on_event=on_event)
    finally:
        if publisher is not None:
            left = publisher.close(publish_timeout)
            if left and on_unpublished is not None:
                on_unpublished(left, publisher.last_error)
        if events is not None:
            events.close()
        actions.close()
        log.close()


def lookup_for(config) -> Callable[[str], Any]:
    """call -> ActionSpec from `config` (for sagas whose definition froze no contract)."""
    from shopctl.saga.contract import resolve

    def lookup(call: str):
        service, _, action = call.partition(".")
        svc = config.service(service)
        declared = svc.actions.get(action)
        return resolve(service, svc.kind, action,
                       None if declared is None else declared.model_dump(mode="json"))

    return lookup


def open_project_engine(config, **options: Any):
    """open_engine for the shop `config` describes: its saga log (.shopctl/saga.db, or
    where shop.yaml's saga_log or SHOPCTL_SAGA_LOG says), the services where Consul (or
    shop.yaml) says they are, gRPC contracts from its protos/, calls signed with its
    service key."""
    from shopctl.saga.endpoints import discover
    from shopctl.saga.store import project_location
    from shopctl.state import ProjectState

    state = ProjectState(config.root)
    state.ensure(state.dir)
    options.setdefault("lease", config.saga_log.lease)
    return open_engine(project_location(config), discover(config), config.root / "protos",
                       lookup=lookup_for(config), service_key=state.service_key(), **options)
