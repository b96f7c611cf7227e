"""POST /refunds: refund once, and compensations that find nothing to refund."""


def test_refund_returns_the_money_once(client, post_charge, post_refund, metric):
    charge = post_charge(client, "order-1", 2400).json()

    first = post_refund(client, "order-1", key="saga-1:refund")
    calls = metric(client, "shop_payments_provider_calls_total", operation="refund")
    repeat = post_refund(client, "order-1", key="saga-1:refund")

    assert first.status_code == 200
    body = first.json()
    assert body == {"refund_id": body["refund_id"], "order_id": "order-1",
                    "amount_cents": 2400, "status": "REFUNDED"}
    assert body["refund_id"]
    assert repeat.status_code == 200
    assert repeat.json() == body
    assert metric(client, "shop_payments_provider_calls_total", operation="refund") == calls
    assert client.get("/charges/order-1").json() == {
        "order_id": "order-1", "charge": charge, "refund": body}


def test_refund_of_an_order_never_charged_is_safe(client, post_charge, post_refund):
    first = post_refund(client, "never-charged")
    repeat = post_refund(client, "never-charged")
    late_charge = post_charge(client, "never-charged", 2400)

    assert first.status_code == 200
    assert first.json() == {"refund_id": None, "order_id": "never-charged",
                            "amount_cents": 0, "status": "NOTHING_TO_REFUND"}
    assert repeat.json() == first.json()
    # A compensated order must not be charged by a late retry of the charge step.
    assert late_charge.status_code == 409
    assert client.app.state.provider.captured_count() == 0


def test_refund_after_a_declined_charge_has_nothing_to_refund(client, post_charge, post_refund):
    post_charge(client, "order-2", 4513)

    resp = post_refund(client, "order-2")

    assert resp.status_code == 200
    assert resp.json()["status"] == "NOTHING_TO_REFUND"
    assert client.get("/charges/order-2").json()["charge"]["status"] == "DECLINED"


def test_refund_after_a_failed_charge_needs_no_provider(client, post_charge, post_refund):
    client.put("/admin/faults", json={"failure_rate": 1})
    failed = post_charge(client, "order-3", 2400)

    # The provider is still failing: the refund must not depend on it, because the
    # failed call is known to have charged nothing.
    resp = post_refund(client, "order-3")

    assert failed.status_code == 503
    assert resp.status_code == 200
    assert resp.json()["status"] == "NOTHING_TO_REFUND"
    assert client.get("/charges/order-3").json()["charge"]["status"] == "VOIDED"


def test_refund_key_reused_for_another_order_conflicts(client, post_charge, post_refund):
    post_charge(client, "order-4", 1000)
    post_charge(client, "order-5", 1000)
    post_refund(client, "order-4", key="refund-key")

    resp = post_refund(client, "order-5", key="refund-key")

    assert resp.status_code == 409
    assert client.get("/charges/order-5").json()["refund"] is None


def test_unknown_order_has_no_payment_state(client):
    assert client.get("/charges/nobody").status_code == 404
