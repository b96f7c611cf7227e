"""The gRPC face of the stock ledger: messages in and out, ledger errors to status codes.

Status codes (the contract in protos/inventory.proto):
    INVALID_ARGUMENT     malformed request or unknown SKU in ReserveStock
    NOT_FOUND            unknown SKU in CheckStock
    FAILED_PRECONDITION  ReserveStock refused for a business reason; not retryable. The
                         rich status carries a google.rpc.ErrorInfo whose reason is
                         INSUFFICIENT_STOCK (plus an InsufficientStock detail listing the
                         first MAX_DETAIL_SHORTAGES shortages) or ORDER_RELEASED. Clients
                         read them with grpc_status.rpc_status.from_call(error).

Messages and details stay small whatever the request (stock.py's Bounds): the status
travels in the trailers, which a default client refuses over 8 KiB. Bytes that are not
a valid request message get INVALID_ARGUMENT too, not grpcio's own INTERNAL
("Exception deserializing request!"): server.py's interceptor parses them.

Importing this module generates the stubs when they are missing or stale
(protogen.load_stubs).
"""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

import protogen
from stock import (
    InsufficientStock,
    InvalidRequest,
    Item,
    OrderReleased,
    ReleaseOutcome,
    ReserveOutcome,
    StockLedger,
    UnknownSku,
)

inventory_pb2, inventory_pb2_grpc = protogen.load_stubs()

SERVICE_NAME = inventory_pb2.DESCRIPTOR.services_by_name["Inventory"].full_name
ERROR_DOMAIN = "inventory.shop"
REASON_INSUFFICIENT_STOCK = "INSUFFICIENT_STOCK"
REASON_ORDER_RELEASED = "ORDER_RELEASED"
MAX_DETAIL_SHORTAGES = 20

_RESERVE_STATUS = {
    ReserveOutcome.RESERVED: inventory_pb2.RESERVE_STATUS_RESERVED,
    ReserveOutcome.ALREADY_RESERVED: inventory_pb2.RESERVE_STATUS_ALREADY_RESERVED,
}
_RELEASE_STATUS = {
    ReleaseOutcome.RELEASED: inventory_pb2.RELEASE_STATUS_RELEASED,
    ReleaseOutcome.ALREADY_RELEASED: inventory_pb2.RELEASE_STATUS_ALREADY_RELEASED,
    ReleaseOutcome.NOT_FOUND: inventory_pb2.RELEASE_STATUS_NOT_FOUND,
}


class InventoryServicer(inventory_pb2_grpc.InventoryServicer):
    def __init__(self, ledger: StockLedger):
        self._ledger = ledger

    def CheckStock(self, request, context):
        try:
            levels = self._ledger.levels(list(request.skus))
        except UnknownSku as exc:
            context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        return inventory_pb2.CheckStockResponse(
            levels=[
                inventory_pb2.StockLevel(sku=lv.sku, available=lv.available, reserved=lv.reserved)
                for lv in levels
            ]
        )

    def ReserveStock(self, request, context):
        items = [Item(item.sku, item.quantity) for item in request.items]
        try:
            reservation = self._ledger.reserve(request.order_id, items)
        except InvalidRequest as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except InsufficientStock as exc:
            shortages = inventory_pb2.InsufficientStock(
                shortages=[
                    inventory_pb2.StockShortage(
                        sku=s.sku, requested=s.requested, available=s.available
                    )
                    for s in exc.shortages[:MAX_DETAIL_SHORTAGES]
                ]
            )
            context.abort_with_status(
                _precondition_failed(
                    str(exc), REASON_INSUFFICIENT_STOCK, {"order_id": request.order_id}, shortages
                )
            )
        except OrderReleased as exc:
            context.abort_with_status(
                _precondition_failed(
                    str(exc), REASON_ORDER_RELEASED, {"order_id": request.order_id}
                )
            )
        return inventory_pb2.ReserveStockResponse(
            order_id=reservation.order_id,
            status=_RESERVE_STATUS[reservation.outcome],
            items=_items_pb(reservation.items),
        )

    def ReleaseStock(self, request, context):
        try:
            release = self._ledger.release(request.order_id)
        except InvalidRequest as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        return inventory_pb2.ReleaseStockResponse(
            order_id=release.order_id,
            status=_RELEASE_STATUS[release.outcome],
            items=_items_pb(release.items),
        )


def _items_pb(items):
    return [inventory_pb2.Item(sku=item.sku, quantity=item.quantity) for item in items]


def _precondition_failed(message, reason, metadata, *extra_details):
    """A FAILED_PRECONDITION rich status: ErrorInfo(reason) first, then `extra_details`."""
    info = error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN, metadata=metadata)
    details = []
    for detail in (info, *extra_details):
        packed = any_pb2.Any()
        packed.Pack(detail)
        details.append(packed)
    return rpc_status.to_status(
        status_pb2.Status(code=code_pb2.FAILED_PRECONDITION, message=message, details=details)
    )
