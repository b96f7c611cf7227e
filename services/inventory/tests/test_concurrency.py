"""Many simultaneous reserves for the last units of a SKU never oversell it."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
import inventory_pb2 as pb
from grpc_status import rpc_status
from shopkit.seed import PRODUCTS

BAG = "SKU-BAG-004"
BAG_TOTAL = next(p.initial_stock for p in PRODUCTS if p.sku == BAG)
LAST_UNITS = 10
CALLERS = 50


def test_fifty_concurrent_reserves_for_the_last_ten_units_reserve_exactly_ten(stub, stock_of):
    stub.ReserveStock(
        pb.ReserveStockRequest(
            order_id="bulk", items=[pb.Item(sku=BAG, quantity=BAG_TOTAL - LAST_UNITS)]
        )
    )
    assert stock_of(BAG) == (LAST_UNITS, BAG_TOTAL - LAST_UNITS)

    start = threading.Barrier(CALLERS)
    samples: list[tuple[int, int]] = []
    burst_over = threading.Event()

    def reserve_one(i: int) -> grpc.StatusCode:
        start.wait()
        try:
            stub.ReserveStock(
                pb.ReserveStockRequest(order_id=f"burst-{i}", items=[pb.Item(sku=BAG, quantity=1)]),
                timeout=30,
            )
        except grpc.RpcError as exc:
            shortage = pb.InsufficientStock()
            rpc_status.from_call(exc).details[1].Unpack(shortage)
            assert [(s.sku, s.available) for s in shortage.shortages] == [(BAG, 0)]
            return exc.code()
        return grpc.StatusCode.OK

    def watch() -> None:
        # Reads stock while the burst runs, to catch an oversold state mid-way.
        while not burst_over.is_set():
            samples.append(stock_of(BAG))

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with ThreadPoolExecutor(max_workers=CALLERS) as pool:
            codes = list(pool.map(reserve_one, range(CALLERS)))
    finally:
        burst_over.set()
        watcher.join()

    assert codes.count(grpc.StatusCode.OK) == LAST_UNITS
    assert codes.count(grpc.StatusCode.FAILED_PRECONDITION) == CALLERS - LAST_UNITS
    assert stock_of(BAG) == (0, BAG_TOTAL)
    assert samples, "the watcher read no stock during the burst"
    assert all(
        available >= 0 and available + reserved == BAG_TOTAL for available, reserved in samples
    )
