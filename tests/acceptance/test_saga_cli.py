"""The demo's order saga (declared only in shop.yaml) through the CLI, as a user drives
it, against a shop that `shopctl up` brought up on the local runtime: `saga run`
completes (exit 0) or compensates (exit 1) with `--fail-at`, `saga show` / `saga list`
report it, `saga check` resolves it, the same idempotency key never orders twice, user
errors exit 2 with a message and no traceback, and every outcome is announced on
RabbitMQ's "saga.events" exchange by the time `saga run` has exited.

Consistency is checked through the services' own state (CheckStock over gRPC,
get_order over RPC, GET /charges over HTTP, the last two with a credential signed with
the project's service key) and through our own queue on the broker.
"""

from __future__ import annotations

import json
import time
import uuid

import pytest
from kombu import Connection, Exchange, Queue

from shopctl.config import load_config
from shopctl.saga.endpoints import discover
from shopctl.service_auth import Credentials
from tests.acceptance.test_shop_roundtrip import make_project, shopctl_in
from tests.integration.test_saga_live import net_charged, order, payment, stock

pytestmark = [pytest.mark.consul, pytest.mark.rabbitmq]

SKU, PRICE = "SKU-MUG-001", 1450
STEPS = ["price", "create_order", "reserve_stock", "charge", "ship"]


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    """(project dir, Endpoints) of one shop, up for the whole module, down at the end."""
    root, _ = make_project(tmp_path_factory.mktemp("saga-cli"))
    try:
        up = shopctl_in(root, "up", "--runtime", "local")
        assert up.returncode == 0, up.stderr[-3000:]
        yield root, discover(load_config(root / "shop.yaml"))
    finally:
        down = shopctl_in(root, "down", "--volumes", "--runtime", "local", timeout=180)
    assert down.returncode == 0, down.stderr[-2000:]


@pytest.fixture
def events(shop):
    """Our own exclusive queue on the shop's broker, bound to every saga event."""
    _, endpoints = shop
    exchange = Exchange("saga.events", type="topic", durable=True)
    with Connection(endpoints.amqp) as conn:
        queue = Queue(f"test-saga-cli-{uuid.uuid4().hex[:8]}", exchange, routing_key="#",
                      exclusive=True)(conn.default_channel)
        queue.declare()
        yield queue


def wait_event(queue, saga_id: str, event_type: str, timeout: float = 5.0) -> dict:
    """The first `event_type` message about `saga_id`; no other event type may precede it."""
    deadline, seen = time.monotonic() + timeout, []
    while time.monotonic() < deadline:
        message = queue.get(no_ack=True)
        if message is None:
            time.sleep(0.1)
            continue
        kind, body = message.delivery_info["routing_key"], message.payload
        seen.append((kind, body.get("saga_id")))
        if body.get("saga_id") == saga_id:
            assert kind == event_type, f"{kind} for saga {saga_id}, wanted {event_type}"
            return body
    raise AssertionError(f"no {event_type} for saga {saga_id} within {timeout}s; seen: {seen}")


def saga(root, *args: str) -> tuple[int, dict]:
    result = shopctl_in(root, "saga", *args, "--json", timeout=60)
    assert result.stdout and "Traceback" not in result.stderr, result.stderr[-3000:]
    return result.returncode, json.loads(result.stdout)


def credentials(root) -> Credentials:
    """Signs as the saga driver does: with the project's service key."""
    return Credentials.for_project(root, "tests")


def items(qty: int, sku: str = SKU) -> str:
    return "items=" + json.dumps([{"sku": sku, "qty": qty}])


def run_order(root, qty: int, *options: str) -> tuple[int, dict]:
    """The README's example: the generic --input path, nothing order-specific."""
    return saga(root, "run", "order", "--input", "user_id=u1", "--input", items(qty), *options)


def order_id(run: dict) -> int:
    (oid,) = {e["result"]["order_id"] for e in run["events"]
              if e["step"] == "create_order" and e["state"] == "succeeded"}
    return oid


def test_run_completes_every_step_and_is_reported(shop, events):
    root, endpoints = shop
    before = stock(endpoints, SKU)
    code, run = run_order(root, 2)
    assert (code, run["status"]) == (0, "completed"), run.get("error")
    done = [e["step"] for e in run["events"] if e["state"] == "succeeded"]
    assert done == STEPS
    wait_event(events, run["id"], "order.completed")

    code, shown = saga(root, "show", run["id"])
    assert (code, shown["status"], shown["events"]) == (0, "completed", run["events"])
    # The outcome event went out before `saga run` returned, and show says so.
    (announced,) = shown["outcome_events"]
    assert announced["event_type"] == "order.completed" and announced["published_at"]
    code, listed = saga(root, "list")
    assert code == 0 and {s["id"]: s["status"] for s in listed}[run["id"]] == "completed"

    oid = order_id(run)
    assert stock(endpoints, SKU) == (before[0] - 2, before[1] + 2)
    pay = payment(endpoints, oid, credentials(root))
    assert pay["charge"]["status"] == "SUCCEEDED" and net_charged(pay) == 2 * PRICE
    assert order(endpoints, oid, credentials(root))["status"] == "SHIPPED"


def test_same_idempotency_key_twice_orders_once(shop):
    root, endpoints = shop
    key = f"k-{uuid.uuid4().hex}"
    before = stock(endpoints, SKU)
    code1, first = run_order(root, 1, "--idempotency-key", key)
    code2, second = run_order(root, 1, "--idempotency-key", key)
    assert (code1, code2, second["status"]) == (0, 0, "completed")
    assert second["id"] == first["id"]
    assert stock(endpoints, SKU) == (before[0] - 1, before[1] + 1)
    assert net_charged(payment(endpoints, order_id(first), credentials(root))) == PRICE
    _, listed = saga(root, "list")
    assert [s["id"] for s in listed if s["idempotency_key"] == key] == [first["id"]]


def test_failure_at_charge_compensates(shop, events):
    root, endpoints = shop
    before = stock(endpoints, SKU)
    code, run = run_order(root, 1, "--fail-at", "charge")
    assert (code, run["status"]) == (1, "compensated")
    compensated = [e["step"] for e in run["events"] if e["state"] == "compensated"]
    assert compensated == ["reserve_stock", "create_order"]  # price has nothing to undo
    wait_event(events, run["id"], "order.compensated")

    oid = order_id(run)
    assert stock(endpoints, SKU) == before
    assert net_charged(payment(endpoints, oid, credentials(root))) == 0
    assert order(endpoints, oid, credentials(root))["status"] == "CANCELLED"


@pytest.mark.parametrize("args, message", [
    (["run", "nosuch", "--input", "user_id=u1"], "error: no saga named 'nosuch'"),
    (["run", "ordr", "--input", "user_id=u1"], "error: no saga named 'ordr'"),
    (["show", "deadbeef"], "error: no saga 'deadbeef'"),
    (["run", "order", "--input", "user_id=u1"], "error: saga 'order' input: missing items"),
    (["run", "order", "--input", "user_id=u1", "--input", "items=3"],
     "error: saga 'order' input: items: expected an array, found integer"),
    (["run", "order", "--input", "user_id=u1", "--input", items(1), "--input", "qty=1"],
     "error: saga 'order' input: unknown input 'qty'"),
    (["run", "order", "--input", "user_id", "--input", items(1)],
     "error: --input 'user_id': expected KEY=VALUE"),
    (["run", "order", "--input-file", "/nonexistent/in.json"],
     "error: --input-file /nonexistent/in.json: No such file or directory"),
    (["run", "order", "--input", "user_id=u1", "--input", items(1), "--fail-at", "nope"],
     "error: --fail-at 'nope' names no step of saga 'order'"),
    (["abort", "deadbeef"], "error: no saga 'deadbeef'"),
])
def test_user_errors_exit_2_with_one_message(shop, args, message):
    result = shopctl_in(shop[0], "saga", *args, timeout=60)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(message), result.stderr
    assert "Traceback" not in result.stderr


def test_without_json_the_timeline_is_followed_by_the_outcome_on_its_own_line(shop):
    root, _ = shop
    result = shopctl_in(root, "saga", "run", "order", "-i", "user_id=u1", "-i", items(1),
                        "--fail-at", "reserve_stock", timeout=60)
    assert result.returncode == 1, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    outcome = [line for line in lines if line.startswith("saga ") and ": compensated" in line]
    assert len(outcome) == 1, result.stdout  # on a line of its own, after the table
    assert any("undo create_order" in line and "compensated" in line for line in lines)
    assert "reason: reserve_stock failed: injected failure" in result.stdout


def test_input_nothing_ran_for_a_bad_input(shop):
    """A refused input leaves no saga behind."""
    root, _ = shop
    _, before = saga(root, "list")
    result = shopctl_in(root, "saga", "run", "order", "-i", "user_id=u1", timeout=60)
    assert result.returncode == 2
    _, after = saga(root, "list")
    assert [s["id"] for s in after] == [s["id"] for s in before]


def test_input_file_from_stdin_and_an_unknown_sku_is_refused_and_compensated(shop):
    """--input-file - reads the input from stdin; an unknown SKU is a refusal of the
    first step (the quote), so nothing was ordered and nothing needs undoing."""
    import subprocess
    import sys

    root, _ = shop
    document = json.dumps({"user_id": "u1", "items": [{"sku": "SKU-NOPE", "qty": 1}]})
    result = subprocess.run([sys.executable, "-m", "shopctl", "saga", "run", "order",
                             "--input-file", "-", "--json"], cwd=root, input=document,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stderr[-2000:]
    run = json.loads(result.stdout)
    assert run["status"] == "compensated" and "404" in run["error"]
    assert run["input"]["items"][0]["sku"] == "SKU-NOPE"
    assert [e["step"] for e in run["events"]] == ["price", "price"]  # started, failed


def test_check_resolves_every_call_against_the_running_shop(shop):
    root, _ = shop
    code, report = saga(root, "check", "order")
    assert code == 0 and report["ok"], report
    calls = {(c["step"], c["phase"]): c for c in report["calls"]}
    assert set(calls) == {("price", "forward"), ("create_order", "forward"),
                          ("create_order", "compensate"), ("reserve_stock", "forward"),
                          ("reserve_stock", "compensate"), ("charge", "forward"),
                          ("charge", "compensate"), ("ship", "forward")}
    assert "OpenAPI" in calls[("charge", "forward")]["detail"]
    assert "shop.inventory.v1.Inventory/ReserveStock" in calls[("reserve_stock", "forward")][
        "target"]
    assert "rpc-orders" in calls[("create_order", "forward")]["detail"]
