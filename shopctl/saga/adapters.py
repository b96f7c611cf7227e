"""Adapters from step actions to the three kinds of service the shop runs.

Each adapter documents which of its failures are retryable; everything here raises
StepFailure or returns a small JSON-able dict (see shopctl.saga.actions).
"""

from __future__ import annotations

import functools
import json
from typing import Any

from shopctl.saga.actions import Clients, StepCall, StepFailure, adapter

# -- orders (nameko) ---------------------------------------------------------------------

# Domain errors the orders service declares: the same call can never succeed.
ORDER_BUSINESS_ERRORS = frozenset({"InvalidOrder", "OrderNotFound", "InvalidTransition"})


def _rpc(clients: Clients, call: StepCall, method: str, *args: Any, **kwargs: Any) -> dict:
    from shopctl.nameko_rpc import NamekoRpcError, RemoteError, RpcTimeout

    try:
        return clients.rpc(call.timeout).call("orders", method, *args, **kwargs)
    except RemoteError as exc:
        raise StepFailure(str(exc), retryable=exc.exc_type not in ORDER_BUSINESS_ERRORS,
                          code=exc.exc_type) from exc
    except RpcTimeout as exc:
        raise StepFailure(f"orders.{method}: {exc}", retryable=True, code="TIMEOUT") from exc
    except NamekoRpcError as exc:  # broker down, service never ran on this vhost
        raise StepFailure(f"orders.{method}: {exc}", retryable=True,
                          code=type(exc).__name__) from exc


def _order_view(order: dict) -> dict[str, Any]:
    return {"order_id": order["id"], "total_cents": order["total_cents"],
            "order_status": order["status"]}


@adapter("nameko", "create_order")
def create_order(clients: Clients, call: StepCall) -> dict[str, Any]:
    ctx = call.context
    order = _rpc(clients, call, "create_order", ctx["user_id"], ctx["items"],
                 idempotency_key=call.forward_key)
    return _order_view(order)


@adapter("nameko", "ship_order")
def ship_order(clients: Clients, call: StepCall) -> dict[str, Any]:
    return _order_view(_rpc(clients, call, "ship_order", call.context["order_id"]))


@adapter("nameko", "cancel_order")
def cancel_order(clients: Clients, call: StepCall) -> dict[str, Any]:
    order_id = call.context.get("order_id")
    if order_id is None:
        # The create call's outcome is unknown (timeout, crash): repeating it with the
        # same key returns the order if it exists, and creates a PENDING one to cancel
        # if it did not: either way no order is left pending.
        order_id = create_order(clients, call)["order_id"]
    return _order_view(_rpc(clients, call, "cancel_order", order_id,
                            reason=(call.reason or "saga compensated")[:200]))


# -- inventory (grpc) --------------------------------------------------------------------

def _grpc_failure(exc, what: str) -> StepFailure:
    import grpc

    # Retrying cannot change these answers; every other code (UNAVAILABLE,
    # DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, ABORTED, INTERNAL, ...) may pass later.
    final = {grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.INVALID_ARGUMENT,
             grpc.StatusCode.NOT_FOUND, grpc.StatusCode.ALREADY_EXISTS,
             grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNIMPLEMENTED,
             grpc.StatusCode.OUT_OF_RANGE}
    code = exc.code()
    return StepFailure(f"{what}: {code.name}: {exc.details()}", retryable=code not in final,
                       code=code.name)


def _items(pb2, call: StepCall) -> list:
    return [pb2.Item(sku=i["sku"], quantity=i["qty"]) for i in call.context["items"]]


@adapter("grpc", "reserve_stock")
def reserve_stock(clients: Clients, call: StepCall) -> dict[str, Any]:
    import grpc

    pb2, stub = clients.inventory()
    request = pb2.ReserveStockRequest(order_id=str(call.context["order_id"]),
                                      items=_items(pb2, call))
    try:
        reply = stub.ReserveStock(request, timeout=call.timeout)
    except grpc.RpcError as exc:
        raise _grpc_failure(exc, "ReserveStock") from exc
    return {"reservation": pb2.ReserveStatus.Name(reply.status)}


@adapter("grpc", "release_stock")
def release_stock(clients: Clients, call: StepCall) -> dict[str, Any]:
    import grpc

    order_id = call.context.get("order_id")
    if order_id is None:  # the order was never created, so nothing was reserved for it
        return {"release": "NO_ORDER"}
    pb2, stub = clients.inventory()
    try:
        reply = stub.ReleaseStock(pb2.ReleaseStockRequest(order_id=str(order_id)),
                                  timeout=call.timeout)
    except grpc.RpcError as exc:
        raise _grpc_failure(exc, "ReleaseStock") from exc
    return {"release": pb2.ReleaseStatus.Name(reply.status)}


# -- payments (http) ---------------------------------------------------------------------

@functools.cache
def _transport_errors() -> tuple[type[Exception], ...]:
    """Every failure of httpcore's transport (httpx raises its own for the same causes)."""
    import httpcore

    return (httpcore.TimeoutException, httpcore.NetworkError, httpcore.ProtocolError,
            httpcore.ProxyError, httpcore.UnsupportedProtocol)


def _post(clients: Clients, call: StepCall, path: str, body: dict) -> dict[str, Any]:
    # httpcore is httpx's own transport (connection pool, keep-alive, timeouts) without
    # the client layer (cookies, auth, redirects, URL merging), which cost about as much
    # CPU as the rest of the call and which these calls do not need.
    url = clients.endpoints.payments_url + path
    timeout = {"connect": call.timeout, "read": call.timeout, "write": call.timeout,
               "pool": call.timeout}  # what httpx's timeout=call.timeout sets
    headers = [(b"Content-Type", b"application/json"),
               (b"Idempotency-Key", call.key.encode())]
    try:
        resp = clients.http().request("POST", url, headers=headers,
                                      content=json.dumps(body).encode(),
                                      extensions={"timeout": timeout})
    except _transport_errors() as exc:  # connect errors, timeouts: may pass later
        raise StepFailure(f"POST {path}: {type(exc).__name__}: {exc}", retryable=True,
                          code="TRANSPORT") from exc
    try:
        data = json.loads(resp.content)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        data = {"detail": resp.content[:200].decode(errors="replace")}
    if resp.status < 300:
        return data
    status = data.get("status") or str(resp.status)
    detail = data.get("reason") or data.get("detail") or status
    # 5xx, 408 and 429 may pass later; other 4xx (402 declined, 409 conflict) never will.
    retryable = resp.status >= 500 or resp.status in (408, 429)
    raise StepFailure(f"POST {path}: {resp.status} {status}: {detail}",
                      retryable=retryable, code=status)


@adapter("fastapi", "charge")
def charge(clients: Clients, call: StepCall) -> dict[str, Any]:
    ctx = call.context
    data = _post(clients, call, "/charges",
                 {"order_id": str(ctx["order_id"]), "amount_cents": ctx["total_cents"]})
    return {"charge_id": data.get("charge_id"), "charged_cents": data.get("amount_cents")}


@adapter("fastapi", "refund")
def refund(clients: Clients, call: StepCall) -> dict[str, Any]:
    order_id = call.context.get("order_id")
    if order_id is None:  # never created, so never charged
        return {"refund": "NO_ORDER"}
    data = _post(clients, call, "/refunds", {"order_id": str(order_id)})
    return {"refund_id": data.get("refund_id"), "refund": data.get("status"),
            "refunded_cents": data.get("amount_cents")}


# -- catalog (http): prices for the saga's input ------------------------------------------

def price_items(catalog_url: str, wanted: list[tuple[str, int]],
                timeout: float = 5.0) -> list[dict[str, Any]]:
    """[{sku, qty, unit_price_cents}] with today's catalog prices, read once before the
    saga starts so that its input (and a resume of it) never depends on later price
    changes. Raises StepFailure for an unknown SKU or an unreachable catalog."""
    import httpx

    items = []
    with httpx.Client(timeout=timeout) as http:
        for sku, qty in wanted:
            try:
                resp = http.get(f"{catalog_url}/products/{sku}")
            except httpx.HTTPError as exc:
                raise StepFailure(f"catalog unreachable at {catalog_url}: {exc}",
                                  retryable=True, code="TRANSPORT") from exc
            if resp.status_code == 404:
                raise StepFailure(f"unknown SKU {sku!r}", retryable=False, code="NOT_FOUND")
            if resp.status_code != 200:
                raise StepFailure(f"catalog answered {resp.status_code} for {sku}",
                                  retryable=True, code=str(resp.status_code))
            items.append({"sku": sku, "qty": qty,
                          "unit_price_cents": resp.json()["price_cents"]})
    return items
