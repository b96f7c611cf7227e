"""Issue 13, against main.py as a real process: malformed requests get INVALID_ARGUMENT
(NOT_FOUND for CheckStock's unknown SKUs) with a short message, however much they name;
never RESOURCE_EXHAUSTED (a message too large for the client) or INTERNAL."""

from __future__ import annotations

import grpc
import inventory_pb2 as pb
import inventory_pb2_grpc as pb_grpc
import pytest

RESERVE = "/shop.inventory.v1.Inventory/ReserveStock"


def _answer(call) -> tuple[str, str]:
    """(status code name, message) of an RPC that is expected to fail."""
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value.code().name, caught.value.details() or ""


def test_malformed_requests_get_short_invalid_argument_answers(service_process,
                                                               with_credentials):
    options = [("grpc.initial_reconnect_backoff_ms", 50), ("grpc.max_reconnect_backoff_ms", 200)]
    address = f"127.0.0.1:{service_process.port}"
    with with_credentials(grpc.insecure_channel(address, options=options)) as chan:
        grpc.channel_ready_future(chan).result(timeout=30)
        stub = pb_grpc.InventoryStub(chan)
        raw_reserve = chan.unary_unary(RESERVE)  # bytes in, bytes out

        def reserve(order_id: str, skus: list[str]):
            items = [pb.Item(sku=sku, quantity=1) for sku in skus]
            return lambda: stub.ReserveStock(
                pb.ReserveStockRequest(order_id=order_id, items=items), timeout=10)

        answers = {
            "1000 unknown SKUs": _answer(reserve("o-1", [f"SKU-NOP-{i:04d}" for i in range(1000)])),
            "10,000 SKUs": _answer(reserve("o-2", [f"SKU-NOP-{i:05d}" for i in range(10_000)])),
            "a 100 KB SKU": _answer(reserve("o-3", ["S" * 100_000])),
            "a 100 KB order_id": _answer(reserve("o" * 100_000, ["SKU-MUG-001"])),
            "check 10,000 unknown SKUs": _answer(lambda: stub.CheckStock(
                pb.CheckStockRequest(skus=[f"SKU-{i:06d}" for i in range(10_000)]), timeout=10)),
            "truncated protobuf": _answer(lambda: raw_reserve(b"\x0a\xff\xff", timeout=10)),
            "invalid UTF-8 in a string": _answer(lambda: raw_reserve(b"\x0a\x02\xff\xfe",
                                                                     timeout=10)),
        }
        still_serving = stub.CheckStock(pb.CheckStockRequest(skus=["SKU-MUG-001"]), timeout=10)

    codes = {probe: code for probe, (code, _) in answers.items()}
    assert codes == {
        "1000 unknown SKUs": "INVALID_ARGUMENT",
        "10,000 SKUs": "INVALID_ARGUMENT",
        "a 100 KB SKU": "INVALID_ARGUMENT",
        "a 100 KB order_id": "INVALID_ARGUMENT",
        "check 10,000 unknown SKUs": "NOT_FOUND",
        "truncated protobuf": "INVALID_ARGUMENT",
        "invalid UTF-8 in a string": "INVALID_ARGUMENT",
    }
    assert all(len(message) < 1000 for _, message in answers.values()), answers
    assert answers["1000 unknown SKUs"][1].endswith("and 990 more")
    assert answers["check 10,000 unknown SKUs"][1].endswith("and 9990 more")
    assert answers["10,000 SKUs"][1] == "at most 1000 items, got 10000"
    assert len(still_serving.levels) == 1
