"""The stock ledger on its own (no gRPC): seeding, idempotency, the shared database file."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from shopkit.seed import SeedProduct

from stock import (
    InsufficientStock,
    Item,
    OrderReleased,
    ReleaseOutcome,
    ReserveOutcome,
    StockLedger,
)

PEN = SeedProduct("SKU-PEN", "Pen", 100, 10)
INK = SeedProduct("SKU-INK", "Ink", 200, 3)


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "data" / "inventory.db"


@pytest.fixture
def ledger(db_path):
    ledger = StockLedger.open(db_path, products=[PEN])
    yield ledger
    ledger.close()


def test_reopening_keeps_stock_and_seeds_only_new_products(ledger, db_path):
    ledger.reserve("o1", [Item(PEN.sku, 4)])
    ledger.close()

    reopened = StockLedger.open(db_path, products=[PEN, INK])
    try:
        levels = {lv.sku: (lv.available, lv.reserved) for lv in reopened.levels()}
    finally:
        reopened.close()

    assert levels == {PEN.sku: (6, 4), INK.sku: (3, 0)}


def test_tombstone_stays_not_found_and_blocks_a_late_reserve(ledger):
    first = ledger.release("o-late")
    repeat = ledger.release("o-late")

    with pytest.raises(OrderReleased):
        ledger.reserve("o-late", [Item(PEN.sku, 1)])
    assert first.outcome == repeat.outcome == ReleaseOutcome.NOT_FOUND
    assert ledger.levels([PEN.sku])[0].available == PEN.initial_stock


def test_repeat_with_other_items_returns_the_original_ones(ledger):
    ledger.reserve("o2", [Item(PEN.sku, 2)])

    repeat = ledger.reserve("o2", [Item(PEN.sku, 9)])

    assert repeat.outcome == ReserveOutcome.ALREADY_RESERVED
    assert repeat.items == (Item(PEN.sku, 2),)
    assert ledger.levels([PEN.sku])[0].reserved == 2


def test_two_ledgers_on_one_file_never_oversell(ledger, db_path):
    # Two connections, as two processes on one data dir would have: only SQLite's
    # write lock (BEGIN IMMEDIATE) keeps them apart, not the in-process lock.
    other = StockLedger.open(db_path, products=[PEN])
    callers = 30
    start = threading.Barrier(callers)

    def reserve_one(i: int) -> bool:
        start.wait()
        try:
            (ledger if i % 2 else other).reserve(f"o-{i}", [Item(PEN.sku, 1)])
        except InsufficientStock:
            return False
        return True

    try:
        with ThreadPoolExecutor(max_workers=callers) as pool:
            reserved = sum(pool.map(reserve_one, range(callers)))
    finally:
        other.close()

    level = ledger.levels([PEN.sku])[0]
    assert reserved == PEN.initial_stock
    assert (level.available, level.reserved) == (0, PEN.initial_stock)
