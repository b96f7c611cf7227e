"""Fault knobs and start-up settings: admin endpoint, Consul KV, validation."""

import pytest
from config import ConfigError

DEFAULTS = {"failure_rate": 0.0, "latency_ms": 0, "decline": False}


def test_knobs_start_at_their_defaults(client):
    assert client.get("/admin/faults").json() == DEFAULTS


def test_admin_put_changes_behaviour(client, post_charge):
    set_down = client.put("/admin/faults", json={"failure_rate": 1})
    down = post_charge(client, "order-1", 1000)
    client.put("/admin/faults", json={"failure_rate": 0.0})
    up = post_charge(client, "order-2", 1000)

    assert set_down.json() == {**DEFAULTS, "failure_rate": 1.0}
    assert down.status_code == 503
    assert up.status_code == 201
    assert client.get("/admin/faults").json() == DEFAULTS


@pytest.mark.parametrize("change", [
    {"failure_rate": 1.5},
    {"failure_rate": -0.1},
    {"failure_rate": "often"},
    {"failure_rate": True},
    {"latency_ms": -1},
    {"latency_ms": 2.5},
    {"latency_ms": 600_000},
    {"decline": "maybe"},
    {"decline": 1},
    {"slowness": 3},
])
def test_invalid_knobs_are_rejected_and_change_nothing(client, change):
    resp = client.put("/admin/faults", json={"latency_ms": 5, **change})

    assert resp.status_code == 422
    assert client.get("/admin/faults").json() == DEFAULTS


def test_failures_follow_the_seed(make_client, post_charge, new_store):
    def outcomes(store):
        client = make_client(**store, fault_seed=42, failure_rate=0.5, breaker_fail_max=1000)
        return [post_charge(client, f"order-{i}", 1000).status_code for i in range(20)]

    first, second = outcomes(new_store()), outcomes(new_store())

    assert first == second
    assert set(first) == {201, 503}


def test_start_up_settings_come_from_the_environment(make_client):
    client = make_client(breaker_fail_max=7, breaker_reset_timeout=2.5, latency_ms=3)

    assert client.get("/admin/breaker").json()["fail_max"] == 7
    assert client.get("/admin/breaker").json()["reset_timeout_s"] == 2.5
    assert client.get("/admin/faults").json()["latency_ms"] == 3


@pytest.mark.parametrize("setting", [{"breaker_fail_max": 0}, {"breaker_reset_timeout": "soon"},
                                     {"failure_rate": 2}, {"provider_timeout_ms": 0}])
def test_invalid_start_up_settings_stop_the_start(make_client, setting):
    with pytest.raises(ConfigError):
        make_client(**setting)


KV = "shopctl/shop/payments/"


def test_consul_kv_sets_knobs_at_start_and_at_run_time(make_client, fake_consul, wait_until):
    fake_consul.kv.update({KV + "breaker_fail_max": "4", KV + "latency_ms": "7"})
    client = make_client(consul_http_addr=fake_consul.addr, kv_poll_seconds=0.05)
    assert client.get("/admin/breaker").json()["fail_max"] == 4
    assert client.get("/admin/faults").json()["latency_ms"] == 7

    fake_consul.kv[KV + "decline"] = "true"

    wait_until(lambda: client.get("/admin/faults").json()["decline"] is True)


def test_admin_change_wins_until_the_next_kv_change(make_client, fake_consul, wait_until):
    fake_consul.kv[KV + "failure_rate"] = "0.25"
    client = make_client(consul_http_addr=fake_consul.addr, kv_poll_seconds=0.05)
    assert client.get("/admin/faults").json()["failure_rate"] == 0.25

    client.put("/admin/faults", json={"failure_rate": 0.75})
    reads = fake_consul.reads
    wait_until(lambda: fake_consul.reads >= reads + 3)  # the watcher polled, unchanged KV
    assert client.get("/admin/faults").json()["failure_rate"] == 0.75

    fake_consul.kv[KV + "failure_rate"] = "0.5"
    wait_until(lambda: client.get("/admin/faults").json()["failure_rate"] == 0.5)


def test_invalid_kv_value_is_ignored(make_client, fake_consul, wait_until):
    client = make_client(consul_http_addr=fake_consul.addr, kv_poll_seconds=0.05)

    fake_consul.kv[KV + "latency_ms"] = "forever"
    fake_consul.kv[KV + "decline"] = "true"  # a valid change in the same poll still applies

    wait_until(lambda: client.get("/admin/faults").json()["decline"] is True)
    assert client.get("/admin/faults").json()["latency_ms"] == 0
