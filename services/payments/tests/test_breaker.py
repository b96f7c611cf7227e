"""The circuit breaker around the provider: trip, fail fast, half-open, close/re-open."""

import pytest

OPEN, HALF_OPEN, CLOSED = 1.0, 2.0, 0.0


def _gauge(client, metric):
    return metric(client, "shop_breaker_state", breaker="provider")


def _charge_calls(client, metric):
    return metric(client, "shop_payments_provider_calls_total", operation="charge")


def _trip(client, post_charge, fail_max):
    """Make `fail_max` charges fail with the provider down; returns their responses."""
    client.put("/admin/faults", json={"failure_rate": 1})
    return [post_charge(client, f"trip-{i}", 1000) for i in range(fail_max)]


def test_breaker_opens_after_fail_max_failures_and_then_fails_fast(
        make_client, post_charge, metric):
    client = make_client(breaker_fail_max=3, breaker_reset_timeout=60)

    failures = _trip(client, post_charge, 3)
    calls = _charge_calls(client, metric)
    fallbacks = metric(client, "shop_payments_fallbacks_total", reason="breaker_open")
    fast = post_charge(client, "while-open", 1000)

    assert [r.status_code for r in failures] == [503, 503, 503]
    assert [r.json()["breaker"] for r in failures] == ["closed", "closed", "open"]
    assert all(r.json()["retryable"] is True for r in failures)
    assert all(r.json()["status"] == "UNAVAILABLE" for r in failures)
    assert fast.status_code == 503
    assert fast.json() == {"status": "UNAVAILABLE", "retryable": True, "breaker": "open",
                           "reason": "breaker_open"}
    assert _charge_calls(client, metric) == calls  # the open breaker never reached it
    assert metric(client, "shop_payments_fallbacks_total", reason="breaker_open") == fallbacks + 1
    assert _gauge(client, metric) == OPEN
    assert client.get("/admin/breaker").json()["state"] == "open"
    assert client.app.state.provider.captured_count() == 0


def test_successes_reset_the_consecutive_failure_count(make_client, post_charge):
    client = make_client(breaker_fail_max=2, breaker_reset_timeout=60)

    client.put("/admin/faults", json={"failure_rate": 1})
    post_charge(client, "a", 1000)
    client.put("/admin/faults", json={"failure_rate": 0})
    post_charge(client, "b", 1000)
    client.put("/admin/faults", json={"failure_rate": 1})
    after = post_charge(client, "c", 1000)

    assert after.json()["breaker"] == "closed"


@pytest.fixture
def tripped(make_client, post_charge, wait_until):
    """An app whose breaker (fail_max 2, reset 0.5 s) tripped and is now half-open."""
    client = make_client(breaker_fail_max=2, breaker_reset_timeout=0.5)
    _trip(client, post_charge, 2)
    wait_until(lambda: client.get("/admin/breaker").json()["state"] == "half_open")
    return client


def test_half_open_after_reset_timeout(tripped, metric):
    assert _gauge(tripped, metric) == HALF_OPEN
    assert tripped.get("/health").json()["breaker"] == "half_open"


def test_success_in_half_open_closes_the_breaker(tripped, post_charge, metric):
    tripped.put("/admin/faults", json={"failure_rate": 0})

    resp = post_charge(tripped, "trial", 1000)

    assert resp.status_code == 201
    assert _gauge(tripped, metric) == CLOSED
    assert tripped.get("/admin/breaker").json() == {
        "state": "closed", "fail_max": 2, "reset_timeout_s": 0.5, "failures": 0}


def test_failure_in_half_open_reopens_the_breaker(tripped, post_charge, metric, wait_until):
    calls = _charge_calls(tripped, metric)

    trial = post_charge(tripped, "trial", 1000)

    assert trial.status_code == 503
    assert trial.json()["reason"] == "provider_error"  # the trial call did reach the provider
    assert trial.json()["breaker"] == "open"
    assert _charge_calls(tripped, metric) == calls + 1
    # It is open again: after another reset timeout it is half-open again.
    wait_until(lambda: tripped.get("/admin/breaker").json()["state"] == "half_open")


def test_failed_charge_is_retried_once_the_provider_is_back(make_client, post_charge, metric):
    client = make_client(breaker_fail_max=5)
    client.put("/admin/faults", json={"failure_rate": 1})
    failed = post_charge(client, "order-1", 2400)
    assert client.get("/charges/order-1").json()["charge"]["status"] == "FAILED"
    client.put("/admin/faults", json={"failure_rate": 0})
    finds = metric(client, "shop_payments_provider_calls_total", operation="find")

    retried = post_charge(client, "order-1", 2400)

    assert failed.status_code == 503
    assert failed.json()["reason"] == "provider_error"
    assert retried.status_code == 201
    assert retried.json()["status"] == "SUCCEEDED"
    # A provider error is known to have charged nothing: no look-up was needed.
    assert metric(client, "shop_payments_provider_calls_total", operation="find") == finds
    assert client.app.state.provider.captured_count() == 1
