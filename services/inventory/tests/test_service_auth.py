"""Issue 13, against main.py as a real process: ReserveStock and ReleaseStock need a
service credential for inventory with the saga action's scope (reserve_stock,
release_stock); every forged, expired, misdirected or user token is refused before the
request is read and changes nothing (no stock held, no order marked released for good).
CheckStock and the health service stay open."""

from __future__ import annotations

import grpc
import inventory_pb2 as pb
import inventory_pb2_grpc as pb_grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from shopkit.service_auth import METADATA_KEY, Caller
from shopkit.testing import UNAUTHENTICATED, credential_probes

MUG = "SKU-MUG-001"
CODES = {UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED}  # else PERMISSION_DENIED
GUARDED = {
    "reserve_stock": lambda stub, order, metadata: stub.ReserveStock(
        pb.ReserveStockRequest(order_id=order, items=[pb.Item(sku=MUG, quantity=2)]),
        metadata=metadata, timeout=10),
    "release_stock": lambda stub, order, metadata: stub.ReleaseStock(
        pb.ReleaseStockRequest(order_id=order), metadata=metadata, timeout=10),
}


@pytest.fixture
def stub(service_process):
    options = [("grpc.initial_reconnect_backoff_ms", 50), ("grpc.max_reconnect_backoff_ms", 200)]
    with grpc.insecure_channel(f"127.0.0.1:{service_process.port}", options=options) as chan:
        grpc.channel_ready_future(chan).result(timeout=30)
        yield pb_grpc.InventoryStub(chan)


def code_of(call) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def reserved(stub, sku: str = MUG) -> int:
    (level,) = stub.CheckStock(pb.CheckStockRequest(skus=[sku]), timeout=10).levels
    return level.reserved


@pytest.mark.parametrize("scope", list(GUARDED))
def test_every_bad_credential_is_refused_and_changes_nothing(stub, service_key, scope):
    probes = credential_probes(service_key, "inventory", scope)
    call = GUARDED[scope]

    codes = {name: code_of(lambda t=token: call(stub, "o-1", [(METADATA_KEY, t)] if t else []))
             for name, (token, _) in probes.items()}
    user_token, _ = probes["a user's access token"]
    as_bearer = code_of(lambda: call(stub, "o-1", [("authorization", f"Bearer {user_token}")]))

    assert codes == {name: CODES.get(expected, grpc.StatusCode.PERMISSION_DENIED)
                     for name, (_, expected) in probes.items()}
    assert as_bearer == grpc.StatusCode.UNAUTHENTICATED
    # Nothing held, and o-1 not remembered as released: a real reserve still works.
    assert reserved(stub) == 0
    caller = Caller(service_key, "orders")
    held = GUARDED["reserve_stock"](stub, "o-1", caller.metadata("inventory", "reserve_stock"))
    assert held.status == pb.RESERVE_STATUS_RESERVED


def test_each_method_needs_its_own_scope(stub, service_key):
    caller = Caller(service_key, "shopctl")
    reserve, release = GUARDED["reserve_stock"], GUARDED["release_stock"]

    crossed = code_of(lambda: release(stub, "o-2", caller.metadata("inventory",
                                                                   "reserve_stock")))
    held = reserve(stub, "o-2", caller.metadata("inventory", "reserve_stock"))
    released = release(stub, "o-2", caller.metadata("inventory", "release_stock"))

    assert crossed == grpc.StatusCode.PERMISSION_DENIED
    assert held.status == pb.RESERVE_STATUS_RESERVED
    assert released.status == pb.RELEASE_STATUS_RELEASED


def test_refusals_say_why(stub):
    with pytest.raises(grpc.RpcError) as refused:
        GUARDED["reserve_stock"](stub, "o-3", [])

    assert refused.value.details() == "missing service credential"


def test_stock_levels_and_health_stay_open(stub, service_process):
    with grpc.insecure_channel(f"127.0.0.1:{service_process.port}") as chan:
        health = health_pb2_grpc.HealthStub(chan).Check(health_pb2.HealthCheckRequest(),
                                                        timeout=10)

    assert reserved(stub) == 0
    assert health.status == health_pb2.HealthCheckResponse.SERVING
