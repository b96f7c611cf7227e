"""200 order sagas at once over a scarce SKU, against the real services (started by the
`shop` fixture of test_saga_live.py, re-used here) and a real RabbitMQ.

Invariants, checked through the services' own state (CheckStock over gRPC, get_order
over RPC, GET /charges over HTTP), never through the saga log alone:
  * no oversell: reserved never exceeds the initial stock, available never goes below 0,
    and exactly min(200, stock) sagas complete;
  * no double charge: completed sagas have exactly one SUCCEEDED charge for the order
    total and no refund; compensated ones have no net charge (here: no charge at all,
    since they fail at reserve_stock, before the pivot).
"""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path

import httpx
import pytest

from shopctl.nameko_rpc import NamekoRpc
from shopctl.saga import log as L
from shopctl.saga.session import open_engine
from shopctl.saga.store import open_log
from shopctl.testing import load_sibling

# The fixtures of test_saga_live.py, loaded by path (--import-mode=importlib puts no test
# folder on sys.path, so `import tests.integration...` is not reliable). Binding the
# fixture functions in this module's namespace is enough for pytest to discover them;
# `shop` is module-scoped, so this module gets its own services with fresh data.
live = load_sibling(__file__, "test_saga_live.py", "_shopctl_saga_live_fixtures")
amqp_uri = live.amqp_uri
shop = live.shop

pytestmark = pytest.mark.rabbitmq

# Initial stock 10 and 25 in shopkit/seed.py: one SKU per saga-log backend, since the
# module's shop (and its stock) serves both runs of the test.
SCARCE = {"sqlite": "SKU-PEN-005", "postgresql": "SKU-BAG-004"}
SAGAS = 200
WORKERS = 24


def _run_all(endpoints, db: Path, items: list[dict]) -> tuple[list, list[BaseException]]:
    """Run SAGAS sagas on WORKERS threads, each with its own engine (its own RPC client,
    gRPC channel, HTTP client and log connection) on the same saga database."""
    jobs: queue.SimpleQueue[int] = queue.SimpleQueue()
    for i in range(SAGAS):
        jobs.put(i)
    results: list = [None] * SAGAS
    errors: list[BaseException] = []
    gate = threading.Barrier(WORKERS)

    def worker() -> None:
        try:
            with open_engine(db, endpoints, live.PROTOS, service_key=live.SERVICE_KEY) as engine:
                gate.wait(timeout=60)
                while True:
                    try:
                        i = jobs.get_nowait()
                    except queue.Empty:
                        return
                    saga, _ = engine.start("order", live.DEFINITION,
                                           {"user_id": f"u-conc-{i}", "items": items})
                    results[i] = saga
        except BaseException as exc:  # reported by the test, never swallowed
            errors.append(exc)

    threads = [threading.Thread(target=worker, name=f"saga-{n}") for n in range(WORKERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not any(t.is_alive() for t in threads), "saga workers hung"
    return results, errors


def test_concurrent_sagas_over_scarce_stock_never_oversell_or_double_charge(
        shop, saga_backend, saga_log_location):
    db = saga_log_location  # each backend: SQLite, PostgreSQL
    SCARCE_SKU = SCARCE[saga_backend]  # noqa: N806 - the module's constant, per backend
    available0, reserved0 = live.stock(shop, SCARCE_SKU)
    initial = available0 + reserved0
    assert 0 < available0 < SAGAS, "the SKU must be scarce for this test to mean anything"
    expected = min(SAGAS, available0)
    items = [{"sku": SCARCE_SKU, "qty": 1}]
    price = httpx.get(f"{shop.base_url('catalog')}/products/{SCARCE_SKU}",
                      timeout=5).json()["price_cents"]

    # Watch the inventory while the sagas run: no moment may show an oversell.
    samples: list[tuple[int, int]] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            samples.append(live.stock(shop, SCARCE_SKU))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        results, errors = _run_all(shop, db, items)
    finally:
        done.set()
        watcher.join(timeout=10)
    assert not errors, errors
    assert all(r is not None for r in results)

    # -- inventory: never oversold --------------------------------------------------------
    assert samples, "the watcher took no sample"
    for available, reserved in samples:
        assert available >= 0 and reserved <= initial, samples
    available, reserved = live.stock(shop, SCARCE_SKU)
    assert (available, reserved) == (available0 - expected, reserved0 + expected)

    # -- saga outcomes --------------------------------------------------------------------
    by_status: dict[str, list] = {}
    for saga in results:
        by_status.setdefault(saga.status, []).append(saga)
    assert set(by_status) <= {L.COMPLETED, L.COMPENSATED}, {
        s: [r.error for r in rs][:3] for s, rs in by_status.items()}
    completed = by_status.get(L.COMPLETED, [])
    compensated = by_status.get(L.COMPENSATED, [])
    assert len(completed) == expected
    assert len(compensated) == SAGAS - expected
    for saga in compensated:  # out of stock: refused for good, no retry storm
        assert "FAILED_PRECONDITION" in (saga.error or ""), saga.error

    with open_log(db) as log:
        assert len(log.list(None, 10_000)) == SAGAS
        order_ids = {saga.id: live.order_id_of(log, saga.id) for saga in results}
        for saga in compensated:
            reserves = [e for e in log.events(saga.id)
                        if e.step == "reserve_stock" and e.state == L.STARTED]
            assert len(reserves) == 1, saga.id
    assert None not in order_ids.values()
    assert len(set(order_ids.values())) == SAGAS, "two sagas share an order"

    # -- orders and payments: one charge per completed order, none for the others ---------
    with NamekoRpc(shop.amqp, timeout=10, credentials=live.CREDENTIALS) as rpc:
        statuses = {oid: rpc.call("orders", "get_order", oid)["status"]
                    for oid in order_ids.values()}
    charged_total = 0
    for saga in completed:
        oid = order_ids[saga.id]
        assert statuses[oid] == "SHIPPED"
        pay = live.payment(shop, oid)
        assert pay is not None and pay["charge"]["status"] == "SUCCEEDED", pay
        assert pay["refund"] is None
        assert live.net_charged(pay) == price
        charged_total += live.net_charged(pay)
    for saga in compensated:
        oid = order_ids[saga.id]
        assert statuses[oid] == "CANCELLED"
        pay = live.payment(shop, oid)
        assert pay is None or pay["charge"] is None, pay  # never reached the pivot
        assert live.net_charged(pay) == 0
    assert charged_total == expected * price
