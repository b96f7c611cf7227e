"""OrderStore: validation, idempotency, the state machine and its outbox (no broker)."""

from __future__ import annotations

import re
import sqlite3
import threading

import pytest
from orders_store import (
    CANCELLED,
    FAILED,
    PENDING,
    SHIPPED,
    InvalidOrder,
    InvalidTransition,
    OrderNotFound,
    OrderStore,
)

ITEMS = [{"sku": "SKU-MUG-001", "qty": 2, "unit_price_cents": 1450},
         {"sku": "SKU-PEN-005", "qty": 1, "unit_price_cents": 3100}]


@pytest.fixture
def store(tmp_path):
    return OrderStore(tmp_path / "data" / "orders.db")


def events(store):
    return [(event.event_type, event.payload["id"]) for event in store.pending_events()]


def test_create_returns_a_pending_order_with_its_total(store):
    order, created = store.create("u1", ITEMS, "key-1")
    assert created
    assert order["status"] == PENDING
    assert order["user_id"] == "u1"
    assert order["items"] == ITEMS
    assert order["total_cents"] == 2 * 1450 + 3100
    assert order["created_at"].endswith("Z")
    assert store.get(order["id"]) == order
    assert events(store) == [("order_created", order["id"])]


def test_same_idempotency_key_returns_the_first_order_and_owes_no_second_event(store):
    first, _ = store.create("u1", ITEMS, "key-1")
    again, created = store.create("u2", ITEMS[:1], "key-1")
    assert not created
    assert again == first
    assert len(store.list_orders()) == 1
    assert events(store) == [("order_created", first["id"])]


def test_concurrent_creates_with_one_key_make_one_order(store):
    results, barrier = [], threading.Barrier(8)

    def create():
        barrier.wait()
        results.append(store.create("u1", ITEMS, "same-key")[0]["id"])

    threads = [threading.Thread(target=create) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(results)) == 1
    assert len(store.list_orders()) == 1


def test_integer_user_id_is_kept_as_text(store):
    order, _ = store.create(42, ITEMS, "k")
    assert order["user_id"] == "42"
    assert store.list_orders(user_id=42) == [order]


@pytest.mark.parametrize(
    ("user_id", "items", "key", "complaint"),
    [
        ("u1", [], "k", "items must be a non-empty list"),
        ("u1", "SKU-MUG-001", "k", "items must be a non-empty list"),
        ("u1", [{"sku": "A", "qty": 1}], "k", "items[0] must have exactly the keys"),
        ("u1", [{"sku": "A", "qty": 0, "unit_price_cents": 1}], "k", "items[0].qty"),
        ("u1", [{"sku": "A", "qty": True, "unit_price_cents": 1}], "k", "items[0].qty"),
        ("u1", [{"sku": "A", "qty": 1, "unit_price_cents": -5}], "k", "unit_price_cents"),
        ("u1", [{"sku": "A", "qty": 1, "unit_price_cents": 1.5}], "k", "unit_price_cents"),
        ("u1", [{"sku": " ", "qty": 1, "unit_price_cents": 1}], "k", "items[0].sku"),
        ("", ITEMS, "k", "user_id"),
        (None, ITEMS, "k", "user_id"),
        ("u1", ITEMS, "", "idempotency_key"),
        ("u1", ITEMS, None, "idempotency_key"),
    ],
)
def test_invalid_input_is_refused_with_a_clear_message(store, user_id, items, key, complaint):
    with pytest.raises(InvalidOrder, match=re.escape(complaint)):
        store.create(user_id, items, key)
    assert store.list_orders() == []


def test_unknown_or_malformed_order_id(store):
    with pytest.raises(OrderNotFound):
        store.get(999)
    with pytest.raises(InvalidOrder):
        store.get("1")
    with pytest.raises(OrderNotFound):
        store.transition(999, SHIPPED)


@pytest.mark.parametrize(("target", "event"), [(SHIPPED, "order_shipped"),
                                                (CANCELLED, "order_cancelled"),
                                                (FAILED, "order_failed")])
def test_pending_moves_once_to_each_final_state(store, target, event):
    order, _ = store.create("u1", ITEMS, "k")
    store.mark_published(store.pending_events()[0].id)

    moved, changed = store.transition(order["id"], target, "why" if target != SHIPPED else None)
    assert changed and moved["status"] == target
    repeat, changed_again = store.transition(order["id"], target, "another reason")
    assert not changed_again
    assert repeat == moved  # including the first reason
    assert events(store) == [(event, order["id"])]


@pytest.mark.parametrize(("first", "then"), [(SHIPPED, CANCELLED), (SHIPPED, FAILED),
                                              (CANCELLED, SHIPPED), (CANCELLED, FAILED),
                                              (FAILED, SHIPPED), (FAILED, CANCELLED)])
def test_final_states_refuse_other_moves(store, first, then):
    order, _ = store.create("u1", ITEMS, "k")
    store.transition(order["id"], first, "r")
    with pytest.raises(InvalidTransition, match=f"is {first}; it cannot become {then}"):
        store.transition(order["id"], then, "r")
    assert store.get(order["id"])["status"] == first


def test_fail_needs_a_reason(store):
    order, _ = store.create("u1", ITEMS, "k")
    with pytest.raises(InvalidOrder, match="reason"):
        store.transition(order["id"], FAILED)
    assert store.get(order["id"])["status"] == PENDING


def test_cancel_keeps_the_reason(store):
    order, _ = store.create("u1", ITEMS, "k")
    cancelled, _ = store.transition(order["id"], CANCELLED, "customer changed their mind")
    assert cancelled["reason"] == "customer changed their mind"
    assert cancelled["updated_at"] >= cancelled["created_at"]


def test_outbox_is_ordered_and_emptied_as_events_are_published(store):
    a, _ = store.create("u1", ITEMS, "a")
    b, _ = store.create("u1", ITEMS, "b")
    store.transition(a["id"], SHIPPED)
    pending = store.pending_events()
    assert [(e.event_type, e.payload["id"]) for e in pending] == [
        ("order_created", a["id"]), ("order_created", b["id"]), ("order_shipped", a["id"])]
    assert pending[2].payload["status"] == SHIPPED
    for event in pending:
        store.mark_published(event.id)
    assert store.pending_events() == []


def test_list_is_newest_first_filters_by_user_and_limits(store):
    ids = [store.create(user, ITEMS, f"k{n}")[0]["id"]
           for n, user in enumerate(["u1", "u2", "u1", "u1"])]
    assert [o["id"] for o in store.list_orders()] == ids[::-1]
    assert [o["id"] for o in store.list_orders(user_id="u1", limit=2)] == [ids[3], ids[2]]
    for bad in (0, 501, "10", True):
        with pytest.raises(InvalidOrder):
            store.list_orders(limit=bad)


def test_orders_and_owed_events_survive_reopening(store):
    order, _ = store.create("u1", ITEMS, "k")
    reopened = OrderStore(store.path)
    assert reopened.get(order["id"]) == order
    assert reopened.create("u1", ITEMS, "k") == (order, False)
    assert events(reopened) == [("order_created", order["id"])]


def test_database_uses_wal(store):
    with sqlite3.connect(store.path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_ping_fails_once_the_database_is_gone(store):
    store.ping()
    for path in store.path.parent.iterdir():
        path.unlink()
    with pytest.raises(sqlite3.Error):
        store.ping()
    assert not store.path.exists()  # a health check never creates an empty database
