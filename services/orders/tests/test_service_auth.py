"""Issue 13, against the orders process on the real broker: every RPC method needs a
service credential for orders scoped to that method; every forged, expired, misdirected
or user token gets a remote Unauthenticated or PermissionDenied error and runs nothing
(no order, no event). The credential is not passed on in the events a call publishes."""

from __future__ import annotations

import pytest
from shopkit.testing import UNAUTHENTICATED, credential_probes

from shopctl.nameko_rpc import NamekoRpc, RemoteError

pytestmark = pytest.mark.rabbitmq

ITEMS = [{"sku": "SKU-TEE-002", "qty": 1, "unit_price_cents": 2400}]
# method -> (args, kwargs) of a call that would change or read something
CALLS = {
    "create_order": (["u-auth", ITEMS, "auth:create"], {}),
    "get_order": ([1], {}),
    "list_orders": ([], {"user_id": "u-auth"}),
    "ship_order": ([1], {}),
    "cancel_order": ([1], {"reason": "x"}),
    "fail_order": ([1, "x"], {}),
}
ERRORS = {UNAUTHENTICATED: "Unauthenticated"}  # else PermissionDenied


class Fixed:
    """Credentials that always send the same token (a forged or stolen one)."""

    def __init__(self, token: str):
        self._token = token

    def token(self, service: str, scope: str) -> str:
        return self._token


def error_of(amqp_uri: str, token: str | None, method: str) -> str | None:
    args, kwargs = CALLS[method]
    with NamekoRpc(amqp_uri, timeout=10,
                   credentials=Fixed(token) if token else None) as client:
        try:
            client.request("orders", method, args, kwargs)
        except RemoteError as exc:
            return exc.exc_type
    return None


def test_every_method_refuses_every_bad_credential_and_runs_nothing(
        start_orders, amqp_uri, service_key, rpc, event_tap):
    start_orders()
    answers, expected = {}, {}
    for method in CALLS:
        for name, (token, outcome) in credential_probes(service_key, "orders", method).items():
            answers[method, name] = error_of(amqp_uri, token, method)
            expected[method, name] = ERRORS.get(outcome, "PermissionDenied")

    assert answers == expected
    assert rpc.call("orders", "list_orders") == []
    assert event_tap.drain(rpc) == []


def test_a_credential_for_one_method_is_refused_by_another(start_orders, rpc):
    start_orders()
    order = rpc.call("orders", "create_order", "u1", ITEMS, "scoped:create")

    with pytest.raises(RemoteError) as refused:
        rpc.request("orders", "cancel_order", [order["id"]], scope="ship_order")

    assert refused.value.exc_type == "PermissionDenied"
    assert "without scope 'cancel_order'" in refused.value.message
    assert rpc.call("orders", "get_order", order["id"])["status"] == "PENDING"


def test_the_credential_is_not_passed_on_in_events(start_orders, rpc, event_tap):
    start_orders()
    order = rpc.call("orders", "create_order", "u1", ITEMS, "forwarded:create")

    assert event_tap.drain(rpc) == [("order_created", order)]
    assert event_tap.headers, "the event arrived without headers to look at"
    assert not any("x-shop-service-token" in key for headers in event_tap.headers
                   for key in headers)
