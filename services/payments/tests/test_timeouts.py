"""A provider call that succeeded but answered too late is never charged twice."""

import pytest


@pytest.fixture
def timed_out(make_client, post_charge, wait_until):
    """An app whose charge of order-1 (2400) was taken by the provider, but whose answer
    came after the caller's 100 ms timeout."""
    client = make_client(provider_timeout_ms=100)
    client.put("/admin/faults", json={"latency_ms": 2000})
    resp = post_charge(client, "order-1", 2400)
    assert resp.status_code == 503
    assert resp.json()["reason"] == "provider_timeout"
    assert resp.json()["retryable"] is True
    provider = client.app.state.provider
    wait_until(lambda: provider.captured_count() == 1)
    client.put("/admin/faults", json={"latency_ms": 0})
    return client


def _calls(client, metric, operation):
    return metric(client, "shop_payments_provider_calls_total", operation=operation)


def test_timed_out_charge_stays_in_doubt(timed_out):
    assert timed_out.get("/charges/order-1").json()["charge"]["status"] == "PENDING"


def test_retry_settles_from_the_provider_instead_of_charging_again(timed_out, post_charge,
                                                                   metric):
    charges, finds = _calls(timed_out, metric, "charge"), _calls(timed_out, metric, "find")

    retry = post_charge(timed_out, "order-1", 2400)
    repeat = post_charge(timed_out, "order-1", 2400)

    assert retry.status_code == 201
    assert retry.json()["status"] == "SUCCEEDED"
    assert repeat.status_code == 200
    assert repeat.json() == retry.json()
    assert _calls(timed_out, metric, "find") == finds + 1
    assert _calls(timed_out, metric, "charge") == charges
    assert timed_out.app.state.provider.captured_count() == 1


def test_refund_after_a_timed_out_charge_returns_the_money(timed_out, post_refund):
    resp = post_refund(timed_out, "order-1")

    assert resp.status_code == 200
    assert resp.json()["status"] == "REFUNDED"
    assert resp.json()["amount_cents"] == 2400
    assert timed_out.get("/charges/order-1").json()["charge"]["status"] == "SUCCEEDED"


def test_timed_out_charge_stays_in_doubt_while_the_provider_is_down(timed_out, post_charge,
                                                                    post_refund):
    timed_out.put("/admin/faults", json={"failure_rate": 1})

    retry = post_charge(timed_out, "order-1", 2400)
    refund = post_refund(timed_out, "order-1")

    # The look-up failed, so nobody knows yet whether the money was taken: neither
    # "failed" nor "nothing to refund" may be claimed.
    assert retry.status_code == 503
    assert refund.status_code == 503
    assert timed_out.get("/charges/order-1").json()["charge"]["status"] == "PENDING"
