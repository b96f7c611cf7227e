"""The Inventory RPCs over a real channel to a real server."""

from __future__ import annotations

import grpc
import inventory_pb2 as pb
import inventory_pb2_grpc as pb_grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from shopkit.seed import PRODUCTS

MUG, TEE, BAG = "SKU-MUG-001", "SKU-TEE-002", "SKU-BAG-004"
INITIAL = {p.sku: p.initial_stock for p in PRODUCTS}


def reserve_request(order_id: str, **quantities: int) -> pb.ReserveStockRequest:
    """reserve_request("o1", MUG=2) with the SKU constants' names as keywords."""
    skus = {"MUG": MUG, "TEE": TEE, "BAG": BAG}
    items = [pb.Item(sku=skus[name], quantity=qty) for name, qty in quantities.items()]
    return pb.ReserveStockRequest(order_id=order_id, items=items)


def error_details(error: grpc.RpcError):
    """(ErrorInfo, [other details]) of a rich FAILED_PRECONDITION status."""
    status = rpc_status.from_call(error)
    assert status is not None, "no rich status details on the error"
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    return info, status.details[1:]


def test_check_stock_lists_every_seeded_sku_when_none_is_asked(stub):
    levels = stub.CheckStock(pb.CheckStockRequest()).levels

    assert {lv.sku: (lv.available, lv.reserved) for lv in levels} == {
        sku: (qty, 0) for sku, qty in INITIAL.items()
    }


def test_check_stock_answers_in_request_order(stub):
    levels = stub.CheckStock(pb.CheckStockRequest(skus=[TEE, MUG])).levels

    assert [(lv.sku, lv.available) for lv in levels] == [(TEE, INITIAL[TEE]), (MUG, INITIAL[MUG])]


def test_check_stock_of_unknown_sku_is_not_found(stub):
    with pytest.raises(grpc.RpcError) as caught:
        stub.CheckStock(pb.CheckStockRequest(skus=[MUG, "SKU-NOPE"]))

    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert "SKU-NOPE" in caught.value.details()


def test_reserve_moves_stock_and_a_repeat_reserves_nothing_more(stub, stock_of):
    first = stub.ReserveStock(reserve_request("order-1", MUG=2, TEE=3))
    # The repeat asks for other items: the first reservation still stands, unchanged.
    repeat = stub.ReserveStock(reserve_request("order-1", MUG=50))

    assert first.status == pb.RESERVE_STATUS_RESERVED
    assert repeat.status == pb.RESERVE_STATUS_ALREADY_RESERVED
    assert [(i.sku, i.quantity) for i in repeat.items] == [(MUG, 2), (TEE, 3)]
    assert stock_of(MUG) == (INITIAL[MUG] - 2, 2)
    assert stock_of(TEE) == (INITIAL[TEE] - 3, 3)


def test_release_returns_stock_once(stub, stock_of):
    stub.ReserveStock(reserve_request("order-2", BAG=5))

    first = stub.ReleaseStock(pb.ReleaseStockRequest(order_id="order-2"))
    repeat = stub.ReleaseStock(pb.ReleaseStockRequest(order_id="order-2"))

    assert first.status == pb.RELEASE_STATUS_RELEASED
    assert [(i.sku, i.quantity) for i in first.items] == [(BAG, 5)]
    assert repeat.status == pb.RELEASE_STATUS_ALREADY_RELEASED
    assert stock_of(BAG) == (INITIAL[BAG], 0)


def test_release_of_an_unknown_order_is_not_found_and_not_an_error(stub):
    reply = stub.ReleaseStock(pb.ReleaseStockRequest(order_id="never-reserved"))
    repeat = stub.ReleaseStock(pb.ReleaseStockRequest(order_id="never-reserved"))

    assert reply.status == repeat.status == pb.RELEASE_STATUS_NOT_FOUND
    assert list(reply.items) == []


def test_insufficient_stock_fails_the_whole_order_with_details(stub, stock_of):
    # MUG alone could be reserved; BAG cannot, so neither is.
    with pytest.raises(grpc.RpcError) as caught:
        stub.ReserveStock(reserve_request("order-3", MUG=1, BAG=INITIAL[BAG] + 1))

    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    info, (packed,) = error_details(caught.value)
    assert info.reason == "INSUFFICIENT_STOCK"
    shortage = pb.InsufficientStock()
    assert packed.Unpack(shortage)
    assert [(s.sku, s.requested, s.available) for s in shortage.shortages] == [
        (BAG, INITIAL[BAG] + 1, INITIAL[BAG])
    ]
    assert stock_of(MUG) == (INITIAL[MUG], 0)
    assert stock_of(BAG) == (INITIAL[BAG], 0)


def test_a_refused_reserve_can_be_retried_with_the_same_order_id(stub, stock_of):
    with pytest.raises(grpc.RpcError):
        stub.ReserveStock(reserve_request("order-4", BAG=INITIAL[BAG] + 1))

    reply = stub.ReserveStock(reserve_request("order-4", BAG=1))

    assert reply.status == pb.RESERVE_STATUS_RESERVED
    assert stock_of(BAG) == (INITIAL[BAG] - 1, 1)


@pytest.mark.parametrize(
    "request_",
    [
        pb.ReserveStockRequest(order_id="o", items=[pb.Item(sku="SKU-NOPE", quantity=1)]),
        pb.ReserveStockRequest(order_id="o", items=[pb.Item(sku=MUG, quantity=0)]),
        pb.ReserveStockRequest(order_id="o", items=[pb.Item(sku=MUG, quantity=-2)]),
        pb.ReserveStockRequest(order_id="", items=[pb.Item(sku=MUG, quantity=1)]),
        pb.ReserveStockRequest(order_id="o", items=[]),
        pb.ReserveStockRequest(
            order_id="o", items=[pb.Item(sku=MUG, quantity=1), pb.Item(sku=MUG, quantity=1)]
        ),
    ],
    ids=["unknown-sku", "zero-qty", "negative-qty", "no-order-id", "no-items", "sku-twice"],
)
def test_malformed_reserve_is_invalid_argument_and_reserves_nothing(stub, stock_of, request_):
    with pytest.raises(grpc.RpcError) as caught:
        stub.ReserveStock(request_)

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert stock_of(MUG) == (INITIAL[MUG], 0)


def test_release_without_order_id_is_invalid_argument(stub):
    with pytest.raises(grpc.RpcError) as caught:
        stub.ReleaseStock(pb.ReleaseStockRequest(order_id=""))

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_late_reserve_after_compensating_release_holds_no_stock(stub, stock_of):
    # The saga's reserve timed out, so it compensated before the reserve arrived.
    released = stub.ReleaseStock(pb.ReleaseStockRequest(order_id="order-late"))
    with pytest.raises(grpc.RpcError) as caught:
        stub.ReserveStock(reserve_request("order-late", TEE=4))

    assert released.status == pb.RELEASE_STATUS_NOT_FOUND
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    info, _ = error_details(caught.value)
    assert info.reason == "ORDER_RELEASED"
    assert stock_of(TEE) == (INITIAL[TEE], 0)


def test_reserve_after_release_of_a_real_reservation_is_refused(stub, stock_of):
    stub.ReserveStock(reserve_request("order-5", TEE=2))
    stub.ReleaseStock(pb.ReleaseStockRequest(order_id="order-5"))

    with pytest.raises(grpc.RpcError) as caught:
        stub.ReserveStock(reserve_request("order-5", TEE=2))

    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert stock_of(TEE) == (INITIAL[TEE], 0)


@pytest.mark.parametrize("service", ["", "shop.inventory.v1.Inventory"])
def test_grpc_health_check_is_serving(channel, service):
    health = health_pb2_grpc.HealthStub(channel)

    reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)

    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_stock_and_reservations_survive_a_restart(start_server, with_credentials):
    first = start_server()
    with with_credentials(grpc.insecure_channel(f"127.0.0.1:{first.port}")) as chan:
        pb_grpc.InventoryStub(chan).ReserveStock(reserve_request("order-6", MUG=7))
    first.stop(grace=1)

    second = start_server()
    with with_credentials(grpc.insecure_channel(f"127.0.0.1:{second.port}")) as chan:
        stub = pb_grpc.InventoryStub(chan)
        (level,) = stub.CheckStock(pb.CheckStockRequest(skus=[MUG])).levels
        repeat = stub.ReserveStock(reserve_request("order-6", MUG=7))
        released = stub.ReleaseStock(pb.ReleaseStockRequest(order_id="order-6"))

    assert (level.available, level.reserved) == (INITIAL[MUG] - 7, 7)
    assert repeat.status == pb.RESERVE_STATUS_ALREADY_RESERVED
    assert released.status == pb.RELEASE_STATUS_RELEASED
