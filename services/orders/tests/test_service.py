"""The orders service as a real process on the real broker, driven the way the saga
engine and shopctl drive it: shopctl.nameko_rpc over AMQP, /health and /metrics over
HTTP, events consumed from the orders.events exchange."""

from __future__ import annotations

import concurrent.futures
import json
import shutil
import signal
import time

import pytest
from orders_store import OrderStore

from shopctl.nameko_rpc import NamekoRpc, RemoteError

pytestmark = pytest.mark.rabbitmq

ITEMS = [{"sku": "SKU-TEE-002", "qty": 3, "unit_price_cents": 2400}]


def test_health_reports_database_and_broker(start_orders):
    orders = start_orders()
    status, body = orders.health()
    assert status == 200
    assert body == {"status": "ok", "service": "orders",
                    "checks": {"rpc": "ok", "db": "ok", "amqp": "ok"}}


def test_create_is_idempotent_and_announced_once(start_orders, rpc, event_tap):
    start_orders()
    order = rpc.call("orders", "create_order", "u1", ITEMS, idempotency_key="saga-1:create")
    again = rpc.call("orders", "create_order", "u1", ITEMS, idempotency_key="saga-1:create")

    assert order["status"] == "PENDING"
    assert order["total_cents"] == 3 * 2400
    assert again == order
    assert rpc.call("orders", "get_order", order["id"]) == order
    assert rpc.call("orders", "list_orders", user_id="u1") == [order]
    assert event_tap.drain(rpc) == [("order_created", order)]


def test_ship_then_cancel_is_refused_with_the_remote_error_type(start_orders, rpc, event_tap):
    start_orders()
    order = rpc.call("orders", "create_order", "u1", ITEMS, "saga-2:create")
    shipped = rpc.call("orders", "ship_order", order["id"])
    assert rpc.call("orders", "ship_order", order["id"]) == shipped  # idempotent

    with pytest.raises(RemoteError) as refused:
        rpc.call("orders", "cancel_order", order["id"], reason="too late")
    assert refused.value.exc_type == "InvalidTransition"
    assert "SHIPPED" in refused.value.message
    assert rpc.call("orders", "get_order", order["id"])["status"] == "SHIPPED"
    assert [(kind, body["status"]) for kind, body in event_tap.drain(rpc)] == [
        ("order_created", "PENDING"), ("order_shipped", "SHIPPED")]


def test_cancel_and_fail_are_idempotent_and_announced_once(start_orders, rpc, event_tap):
    start_orders()
    a = rpc.call("orders", "create_order", "u1", ITEMS, "saga-3:create")
    b = rpc.call("orders", "create_order", "u1", ITEMS, "saga-4:create")
    event_tap.drain(rpc)

    cancelled = rpc.call("orders", "cancel_order", a["id"], reason="out of stock")
    assert rpc.call("orders", "cancel_order", a["id"]) == cancelled
    failed = rpc.call("orders", "fail_order", b["id"], "payment declined")
    assert rpc.call("orders", "fail_order", b["id"], "payment declined") == failed

    assert (cancelled["status"], cancelled["reason"]) == ("CANCELLED", "out of stock")
    assert (failed["status"], failed["reason"]) == ("FAILED", "payment declined")
    assert event_tap.drain(rpc) == [("order_cancelled", cancelled), ("order_failed", failed)]


def test_concurrent_retries_of_one_step_make_one_order(start_orders, amqp_uri, rpc, event_tap):
    start_orders()

    def create(_):
        # One client per thread, as a parallel saga runner would use them.
        with NamekoRpc(amqp_uri, timeout=10, credentials=rpc.credentials) as client:
            return client.call("orders", "create_order", "u1", ITEMS, "saga-7:create")["id"]

    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        ids = set(pool.map(create, range(8)))
    assert len(ids) == 1
    assert [kind for kind, _ in event_tap.drain(rpc)] == ["order_created"]


def test_events_owed_before_a_crash_are_published_after_restart(
        start_orders, rpc, event_tap, tmp_path):
    # A change committed by a process that died before publishing its event.
    data_dir = tmp_path / "crashed"
    owed, _ = OrderStore(data_dir / "orders.db").create("u1", ITEMS, "saga-8:create")

    start_orders(data_dir)
    fresh = rpc.call("orders", "create_order", "u1", ITEMS, "saga-9:create")
    assert event_tap.drain(rpc) == [("order_created", owed), ("order_created", fresh)]


def test_bad_requests_come_back_as_typed_remote_errors(start_orders, rpc):
    start_orders()
    with pytest.raises(RemoteError) as invalid:
        rpc.call("orders", "create_order", "u1", [{"sku": "X", "qty": -1,
                                                  "unit_price_cents": 5}], "k")
    with pytest.raises(RemoteError) as missing:
        rpc.call("orders", "get_order", 424242)
    assert (invalid.value.exc_type, invalid.value.message) == (
        "InvalidOrder", "items[0].qty must be an integer from 1 to 10000")
    assert missing.value.exc_type == "OrderNotFound"


def test_metrics_count_rpc_calls_by_method_and_outcome(start_orders, rpc):
    orders = start_orders()
    rpc.call("orders", "create_order", "u1", ITEMS, "saga-5:create")
    with pytest.raises(RemoteError):
        rpc.call("orders", "get_order", 1_000_000)

    wanted = [
        'shop_requests_total{endpoint="create_order",method="RPC",service="orders",'
        'status="ok"} 1.0',
        'shop_requests_total{endpoint="get_order",method="RPC",service="orders",'
        'status="rejected"} 1.0',
        'shop_request_duration_seconds_count{endpoint="create_order",method="RPC",'
        'service="orders"} 1.0',
    ]
    # Nameko records a worker just after sending its reply, so poll briefly.
    deadline = time.monotonic() + 10
    while True:
        status, body = orders.get("/metrics")
        assert status == 200
        if all(line in body for line in wanted) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert [line for line in wanted if line not in body] == []


def test_sigterm_exits_zero_and_orders_survive_a_restart(start_orders, rpc, tmp_path):
    data_dir = tmp_path / "kept"
    first = start_orders(data_dir)
    order = rpc.call("orders", "create_order", "u9", ITEMS, "saga-6:create")
    rpc.call("orders", "ship_order", order["id"])
    assert first.stop(signal.SIGTERM) == 0
    assert '"msg": "stopped"' in first.logs()

    second = start_orders(data_dir)
    assert rpc.call("orders", "get_order", order["id"])["status"] == "SHIPPED"
    # The idempotency record survives too: a retried saga step gets the same order.
    assert rpc.call("orders", "create_order", "u9", ITEMS, "saga-6:create")["id"] == order["id"]
    assert second.stop(signal.SIGINT) == 0


def test_health_turns_503_when_the_database_is_gone(start_orders, tmp_path):
    orders = start_orders(tmp_path / "doomed")
    shutil.rmtree(tmp_path / "doomed")
    status, body = orders.health()
    assert status == 503
    assert body["status"] == "unavailable"
    assert body["checks"]["db"].startswith("unavailable")
    assert body["checks"]["amqp"] == "ok"
    assert orders.stop() == 0


def test_logs_are_json_lines(start_orders):
    orders = start_orders()
    orders.health()
    assert orders.stop() == 0
    lines = [line for line in orders.logs().splitlines() if line.strip()]
    assert lines, "the service logged nothing"
    for line in lines:
        doc = json.loads(line)  # every line, including nameko's and kombu's
        assert doc["service"] == "orders"
