"""Sagas ride out a real broker outage: RabbitMQ's AMQP listener is stopped (rabbitmqctl
stop_app) while 20 order sagas run, for 10 s, then for 90 s. After the short one no saga
is stuck; after the long one the sagas stuck by it are exactly those a worker pass picks
up, and after both every saga ends consistent, checked through the services' own state
(get_order over RPC, CheckStock over gRPC, GET /charges over HTTP).

Both saga-log backends ride out the SAME outages: 20 sagas logged in SQLite and 20 in
PostgreSQL run side by side, so the two minutes of outage are paid once, not per backend.
"""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import pytest

from shopctl.saga import log as L
from shopctl.saga.session import open_engine
from shopctl.saga.store import open_log
from shopctl.testing import load_sibling

# The live services of test_saga_live.py (see test_saga_concurrency.py for why by path).
live = load_sibling(__file__, "test_saga_live.py", "_shopctl_saga_outage_fixtures")
amqp_uri = live.amqp_uri
shop = live.shop

pytestmark = pytest.mark.rabbitmq

SAGAS = 20
SKU = "SKU-MUG-001"


def rabbitmq(action: str) -> None:
    done = subprocess.run(["rabbitmqctl", action], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


@pytest.fixture
def broker_back():
    """Whatever happens in the test, the broker's app runs again afterwards."""
    yield
    subprocess.run(["rabbitmqctl", "start_app"], capture_output=True, timeout=120)


def run_through_outage(endpoints, logs: dict[str, Path],
                       outage: float) -> dict[str, list[L.SagaRecord]]:
    """SAGAS sagas per saga log, each on its own thread; the broker goes away once they
    have all started and comes back `outage` seconds later. Returns each log's sagas as
    they ended."""
    results = {backend: [None] * SAGAS for backend in logs}
    errors: list[BaseException] = []
    started = threading.Barrier(SAGAS * len(logs) + 1)

    def one(backend: str, i: int) -> None:
        try:
            with open_engine(logs[backend], endpoints, live.PROTOS, publish_timeout=2,
                             service_key=live.SERVICE_KEY) as engine:
                started.wait(timeout=60)
                time.sleep(i * 0.05)  # spread over the steps when the broker goes
                saga, _ = engine.start("order", live.DEFINITION,
                                       live.order_input(f"u-outage-{backend}-{i}"))
                results[backend][i] = saga
        except BaseException as exc:
            errors.append(exc)

    # The demo's nameko service may exit while its broker stays away (nameko kills its
    # container); a runtime's supervisor starts it again, and so does this watcher.
    watching = threading.Event()

    def supervise() -> None:
        while not watching.wait(1.0):
            live.SUPERVISE[id(endpoints)]()

    threads = [threading.Thread(target=one, args=(backend, i))
               for backend in logs for i in range(SAGAS)]
    for thread in threads:
        thread.start()
    supervisor = threading.Thread(target=supervise, daemon=True)
    supervisor.start()
    started.wait(timeout=60)
    time.sleep(0.3)
    rabbitmq("stop_app")
    time.sleep(outage)
    rabbitmq("start_app")
    for thread in threads:
        thread.join(timeout=600)
    watching.set()
    supervisor.join(timeout=10)
    assert not errors, errors
    assert all(r is not None for sagas in results.values() for r in sagas)
    return results


def order_status(endpoints, oid) -> str:
    """get_order, asked again while the service's broker connections settle after the
    outage (a reply its stale publisher lost is a timeout here, not an answer)."""
    from shopctl.nameko_rpc import RemoteError, RpcTimeout

    deadline = time.monotonic() + 120
    while True:
        try:
            return live.order(endpoints, oid)["status"]
        except RemoteError as exc:  # it answers: that is all this wait is for
            return exc.exc_type
        except RpcTimeout:
            assert time.monotonic() < deadline, "orders never answered after the outage"


def assert_consistent(endpoints, logs: dict[str, Path],
                      sagas: dict[str, list[L.SagaRecord]], before, price: int) -> int:
    """Every saga of every log ended consistent; returns how many completed."""
    completed = 0
    for backend, db in logs.items():
        with open_log(db) as log:
            for saga in sagas[backend]:
                saga = log.get(saga.id)
                oid = live.order_id_of(log, saga.id)
                charged = live.net_charged(live.payment(endpoints, oid)) if oid else 0
                status = order_status(endpoints, oid) if oid else None
                if saga.status == L.COMPLETED:
                    completed += 1
                    assert (status, charged) == ("SHIPPED", price), (backend, saga.id)
                else:
                    assert saga.status == L.COMPENSATED, (backend, saga.status, saga.error)
                    assert status in (None, "CANCELLED") and charged == 0, (saga.id, status)
    # Each completed saga holds exactly one unit; the compensated ones none.
    assert live.stock(endpoints, SKU) == (before[0] - completed, before[1] + completed)
    return completed


@pytest.fixture
def saga_logs(tmp_path, pg_server) -> dict[str, Path]:
    """One saga log per backend (tests.saga_backends), side by side."""
    return {"sqlite": tmp_path / "saga.db", "postgresql": pg_server.new_database()}


def test_sagas_ride_out_a_short_and_a_long_broker_outage(shop, saga_logs, broker_back):
    import httpx

    price = httpx.get(f"{shop.base_url('catalog')}/products/{SKU}", timeout=5).json()[
        "price_cents"]

    before = live.stock(shop, SKU)
    short = run_through_outage(shop, saga_logs, outage=10)
    stuck = [s.error for sagas in short.values() for s in sagas if s.status == L.STUCK]
    assert not stuck, stuck
    # none had to give up
    assert assert_consistent(shop, saga_logs, short, before, price) == SAGAS * len(saga_logs)

    before = live.stock(shop, SKU)
    long = run_through_outage(shop, saga_logs, outage=90)
    # 90 s outlasts a step's 60 s deadline, and the nameko service itself takes a while
    # to reconnect: some sagas wait as stuck, each for a failure that may pass. The
    # worker's pass over each log picks exactly those up once the services answer again.
    live.SUPERVISE[id(shop)]()
    order_status(shop, 1)  # wait until orders answers again (any answer will do)
    for backend, db in saga_logs.items():
        stuck = [s for s in long[backend] if s.status == L.STUCK]
        with open_engine(db, shop, live.PROTOS, service_key=live.SERVICE_KEY) as engine:
            assert {s.id for s in engine.outage_stuck(older_than=0)} == {s.id for s in stuck}
            for saga in stuck:
                assert "kept failing for" in saga.error, (backend, saga.error)
            _, retried = engine.sweep(retry_stuck_after=0)
        assert {s.id for s in retried} == {s.id for s in stuck}, backend
    assert_consistent(shop, saga_logs, long, before, price)
