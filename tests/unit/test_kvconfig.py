"""`shopctl config push/get/set` without an agent: KEY parsing, what shop.yaml declares,
and what reaches the registry."""

from __future__ import annotations

import socket

import pytest

from shopctl.config import ShopConfig
from shopctl.errors import RuntimeUnavailable, UsageError
from shopctl.kvconfig import (
    SettingKey,
    declared_settings,
    get,
    parse_key,
    push,
    registry_for,
    set_value,
)


@pytest.fixture
def config() -> ShopConfig:
    return ShopConfig.model_validate({
        "project": "shop",
        "services": {
            "users": {"kind": "flask", "port": 8001, "env": {"ACCESS_TOKEN_TTL": 900}},
            "payments": {"kind": "fastapi", "port": 8004,
                         "config": {"failure_rate": 0.0, "mode": "fast", "flags": [1, 2],
                                    "on": True}},
            "new-api": {"kind": "fastapi", "port": 8100},
        },
    })


class FakeRegistry:
    def __init__(self, tree: dict[str, str] | None = None):
        self.tree = dict(tree or {})
        self.writes: list[tuple[str, str]] = []

    def kv_tree(self, prefix: str = "") -> dict[str, str]:
        return {k: v for k, v in self.tree.items() if k.startswith(prefix)}

    def get_kv(self, key: str) -> str | None:
        return self.tree.get(key)

    def put_kv(self, key: str, value: str) -> None:
        self.writes.append((key, value))
        self.tree[key] = value


@pytest.mark.parametrize(("text", "expected"), [
    ("payments.failure_rate", SettingKey("payments", "failure_rate")),
    ("payments/failure_rate", SettingKey("payments", "failure_rate")),
    ("new-api.some.dotted", SettingKey("new-api", "some.dotted")),
    ("new-api/a/b", SettingKey("new-api", "a/b")),
    ("users.ACCESS_TOKEN_TTL", SettingKey("users", "access_token_ttl")),  # env name
    ("  payments.latency_ms ", SettingKey("payments", "latency_ms")),
])
def test_parse_key(config, text, expected):
    assert parse_key(text, config) == expected


def test_a_service_alone_is_a_folder_only_where_allowed(config):
    assert parse_key("payments", config, need_key=False) == SettingKey("payments", None)
    with pytest.raises(UsageError, match="expected SERVICE.KEY, e.g. payments.failure_rate"):
        parse_key("payments", config)
    with pytest.raises(UsageError, match="expected SERVICE.KEY"):
        parse_key("payments.", config)


def test_an_unknown_service_gets_a_did_you_mean(config):
    with pytest.raises(UsageError) as caught:
        parse_key("paymnts.failure_rate", config)
    assert "no service named 'paymnts'" in caught.value.message
    assert caught.value.hint == "did you mean 'payments'?"


def test_a_key_with_odd_characters_is_refused(config):
    with pytest.raises(UsageError, match="invalid key"):
        parse_key("payments.fail rate", config)


def test_declared_settings_store_env_lower_cased_and_config_values_as_json(config):
    assert declared_settings(config, "users") == {"access_token_ttl": "900"}
    assert declared_settings(config, "payments") == {
        "failure_rate": "0.0", "mode": "fast", "flags": "[1, 2]", "on": "true"}


def test_push_overwrites_what_shop_yaml_declares_and_leaves_other_keys(config):
    registry = FakeRegistry({"payments/failure_rate": "1", "payments/mode": "fast",
                             "payments/decline": "true"})
    done = push(config, registry, ["payments"])
    assert ("payments/failure_rate", "0.0") in registry.writes
    assert not any(key == "payments/mode" for key, _ in registry.writes)  # unchanged
    assert registry.tree["payments/decline"] == "true"
    assert {s.key: s.changed for s in done} == {
        "failure_rate": True, "mode": False, "flags": True, "on": True}


def test_set_and_get(config):
    registry = FakeRegistry()
    s = set_value(config, registry, "payments.failure_rate", "1")
    assert (s.value, s.declared, s.changed) == ("1", "0.0", True)
    assert registry.writes == [("payments/failure_rate", "1")]
    (one,) = get(config, registry, "payments/failure_rate")
    assert one.value == "1"
    listed = {s.key: (s.value, s.declared) for s in get(config, registry, "payments")}
    assert listed["failure_rate"] == ("1", "0.0")
    assert listed["mode"] == (None, "fast")  # declared, not stored yet


def test_an_unreachable_consul_is_a_clear_runtime_error(config):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    closed = config.model_copy(update={"infra": config.infra.model_copy(update={
        "consul": config.infra.consul.model_copy(update={"port": port})})})
    with pytest.raises(RuntimeUnavailable, match=f"Consul is not reachable at .*:{port}") as e:
        registry_for(closed)
    assert e.value.exit_code == 1
