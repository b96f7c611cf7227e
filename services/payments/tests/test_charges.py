"""POST /charges: one charge per order, declines, conflicts, validation."""

import pytest


def test_charge_succeeds_and_is_recorded(client, post_charge):
    resp = post_charge(client, "order-1", 2400)

    assert resp.status_code == 201
    body = resp.json()
    assert body == {"charge_id": body["charge_id"], "order_id": "order-1",
                    "amount_cents": 2400, "currency": "EUR", "status": "SUCCEEDED"}
    assert body["charge_id"]
    state = client.get("/charges/order-1").json()
    assert state == {"order_id": "order-1", "charge": body, "refund": None}
    assert client.app.state.provider.captured_count() == 1


def test_repeat_returns_first_result_without_calling_the_provider(client, post_charge, metric):
    first = post_charge(client, "order-2", 1900, key="saga-7:charge")
    calls = metric(client, "shop_payments_provider_calls_total", operation="charge")

    repeats = [post_charge(client, "order-2", 1900, key="saga-7:charge"),
               post_charge(client, "order-2", 1900)]

    assert first.status_code == 201
    assert [r.status_code for r in repeats] == [200, 200]
    assert all(r.json() == first.json() for r in repeats)
    assert metric(client, "shop_payments_provider_calls_total", operation="charge") == calls
    assert client.app.state.provider.captured_count() == 1


@pytest.mark.parametrize("change", [{"amount_cents": 1901}, {"currency": "USD"}])
def test_repeat_with_other_amount_or_currency_conflicts(client, post_charge, change):
    first = post_charge(client, "order-3", 1900)
    fields = {"amount_cents": 1900, **change}

    resp = post_charge(client, "order-3", fields.pop("amount_cents"), **fields)

    assert resp.status_code == 409
    assert resp.json()["status"] == "CONFLICT"
    assert client.get("/charges/order-3").json()["charge"] == first.json()
    assert client.app.state.provider.captured_count() == 1


def test_idempotency_key_reused_for_another_order_conflicts(client, post_charge):
    post_charge(client, "order-4", 1000, key="key-A")

    resp = post_charge(client, "order-5", 1000, key="key-A")

    assert resp.status_code == 409
    assert client.get("/charges/order-5").status_code == 404


def test_declined_card_is_final_and_charges_nothing(client, post_charge, metric):
    first = post_charge(client, "order-6", 1013)  # amounts ending in 13 cents are declined
    calls = metric(client, "shop_payments_provider_calls_total", operation="charge")
    repeat = post_charge(client, "order-6", 1013)

    assert first.status_code == 402
    assert first.json()["status"] == "DECLINED"
    assert first.json()["retryable"] is False
    assert repeat.status_code == 402
    assert repeat.json() == first.json()
    assert metric(client, "shop_payments_provider_calls_total", operation="charge") == calls
    assert client.app.state.provider.captured_count() == 0


def test_decline_knob_declines_any_amount(client, post_charge):
    client.put("/admin/faults", json={"decline": True})
    declined = post_charge(client, "order-7", 2400)
    client.put("/admin/faults", json={"decline": False})
    accepted = post_charge(client, "order-8", 2400)

    assert declined.status_code == 402
    assert accepted.status_code == 201
    assert client.app.state.provider.captured_count() == 1


def test_currency_defaults_to_eur_and_can_be_given(client, post_charge):
    assert post_charge(client, "order-9", 500).json()["currency"] == "EUR"
    assert post_charge(client, "order-10", 500, currency="GBP").json()["currency"] == "GBP"


@pytest.mark.parametrize("payload", [
    {"order_id": "o", "amount_cents": 0},
    {"order_id": "o", "amount_cents": -100},
    {"order_id": "o", "amount_cents": 12.5},
    {"order_id": "o", "amount_cents": "100"},
    {"order_id": "", "amount_cents": 100},
    {"amount_cents": 100},
    {"order_id": "o", "amount_cents": 100, "currency": "eur"},
])
def test_invalid_charge_requests_are_rejected(client, payload):
    resp = client.post("/charges", json=payload)

    assert resp.status_code == 422
    assert client.app.state.provider.captured_count() == 0


def test_charges_survive_a_restart(make_client, post_charge):
    first = post_charge(make_client(), "order-11", 3100)

    again = post_charge(make_client(), "order-11", 3100)

    assert again.status_code == 200
    assert again.json() == first.json()


def test_the_largest_amount_is_kept_exactly(client, post_charge):
    largest = 2**53 - 1  # app.MAX_AMOUNT_CENTS: beyond a 32-bit column on any backend

    resp = post_charge(client, "order-12", largest)

    assert resp.status_code == 201
    assert client.get("/charges/order-12").json()["charge"]["amount_cents"] == largest
