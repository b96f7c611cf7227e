"""Loading valid shop.yaml files: defaults, interpolation, start order, the model's API."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pydantic
import pytest

from shopctl.config import (
    ConfigInvalid,
    ConfigProblem,
    SagaConfig,
    SagaStep,
    ServiceConfig,
    ShopConfig,
    find_config,
    load_config,
)
from shopctl.errors import ConfigError, UsageError

SERVICE_DIRS = ("users", "catalog", "orders", "payments", "search")

FULL = """\
project: myshop
x-service: &service
  replicas: 2
  tags: [shop]
infra:
  rabbitmq:
    management_port: 15672
  prometheus:
    enabled: "${PROMETHEUS:-false}"
  base_image: python:3.12-slim
services:
  users:
    <<: *service
    kind: fastapi
    port: "${USERS_PORT:-8001}"
    env:
      DEBUG: true
      WORKERS: 4
      RATIO: 0.5
      DSN: "postgres://${DB_USER-shop}:$${SECRET}@db/${DB_NAME}"
  catalog:
    kind: flask
    port: 8002
    depends_on: [users]
    health: {path: /ready, interval: 250ms, timeout: 1, start_period: 1m}
    config:
      page_size: 20
      currency: ${CURRENCY:-EUR}
  orders:
    kind: nameko
    port: 8003
    depends_on: [users, catalog]
  payments:
    kind: grpc
    port: 50051
    metrics_port: 9101
    path: services/payments
  search:
    kind: fastapi
    port: $SEARCH_PORT
    depends_on: [catalog]
sagas:
  checkout:
    steps:
      - name: reserve
        call: catalog.reserve_items
        compensate: catalog.release_items
      - name: charge
        call: payments.charge
        pivot: true
        timeout: 1m30s
        retries: 0
        backoff: 1.5
      - name: confirm
        call: orders.confirm
"""

ENV = {"DB_NAME": "shopdb", "SEARCH_PORT": "8005", "CURRENCY": "", "DB_USER": ""}


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for name in SERVICE_DIRS:
        (tmp_path / "services" / name).mkdir(parents=True)
    return tmp_path


def write(folder: Path, text: str, name: str = "shop.yaml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


@pytest.fixture
def config(folder: Path) -> ShopConfig:
    write(folder, FULL)
    return load_config("shop.yaml", ENV)


def test_full_config_loads_with_values_and_defaults(config: ShopConfig, folder: Path) -> None:
    assert config.project == "myshop"
    assert list(config.services) == ["users", "catalog", "orders", "payments", "search"]
    users = config.services["users"]
    assert users.name == "users"
    assert users.kind == "fastapi"
    assert users.path == "services/users"
    assert users.port == 8001
    assert users.metrics_port is None
    assert users.depends_on == []
    assert users.replicas == 2
    assert users.tags == ["shop"]
    assert users.health.path == "/health"
    assert (users.health.interval, users.health.timeout, users.health.start_period) == (
        5.0,
        2.0,
        30.0,
    )
    assert config.services["catalog"].health.model_dump() == {
        "path": "/ready",
        "interval": 0.25,
        "timeout": 1.0,
        "start_period": 60.0,
    }
    assert config.services["payments"].metrics_port == 9101
    assert config.services["orders"].replicas == 1
    assert config.root == folder
    assert config.source == folder / "shop.yaml"


def test_infra_defaults_and_overrides(config: ShopConfig) -> None:
    infra = config.infra
    assert (infra.consul.enabled, infra.consul.image, infra.consul.port) == (
        True,
        "shopctl/consul:1.8",
        8500,
    )
    assert infra.rabbitmq.port == 5672
    assert infra.rabbitmq.management_port == 15672
    assert infra.prometheus.enabled is False
    assert infra.prometheus.port == 9090
    assert infra.base_image == "python:3.12-slim"


def test_infra_is_optional(folder: Path) -> None:
    write(folder, "project: p\nservices:\n  users: {kind: flask, port: 8001}\nsagas:\n")
    config = load_config("shop.yaml", {})
    assert config.infra.base_image == "shopctl/python:3.11"
    assert config.infra.rabbitmq.management_port is None
    assert config.sagas == {}


def test_env_values_are_stringified_and_interpolated(config: ShopConfig) -> None:
    assert config.services["users"].env == {
        "DEBUG": "true",
        "WORKERS": "4",
        "RATIO": "0.5",
        # ${DB_USER-shop}: DB_USER is set (empty), so no default; $$ is a literal $.
        "DSN": "postgres://:${SECRET}@db/shopdb",
    }


def test_interpolation_forms(config: ShopConfig) -> None:
    assert config.services["users"].port == 8001  # ${USERS_PORT:-8001}, unset
    assert config.services["search"].port == 8005  # $SEARCH_PORT, bare form
    assert config.services["catalog"].config == {"page_size": 20, "currency": "EUR"}


def test_numeric_port_from_environment(folder: Path) -> None:
    write(folder, FULL)
    config = load_config("shop.yaml", {**ENV, "USERS_PORT": "9001", "PROMETHEUS": "yes"})
    assert config.services["users"].port == 9001
    assert config.infra.prometheus.enabled is True


def test_environ_defaults_to_the_process_environment(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(folder, "project: ${PROJECT}\nservices:\n  users: {kind: flask, port: 8001}\n")
    monkeypatch.setenv("PROJECT", "fromenv")
    assert load_config("shop.yaml").project == "fromenv"


def test_sagas(config: ShopConfig) -> None:
    saga = config.sagas["checkout"]
    assert isinstance(saga, SagaConfig)
    assert saga.name == "checkout"
    assert [step.name for step in saga.steps] == ["reserve", "charge", "confirm"]
    reserve, charge, confirm = saga.steps
    assert (reserve.service, reserve.action) == ("catalog", "reserve_items")
    assert reserve.compensate == "catalog.release_items"
    # By default a failure that may pass is retried until a 60 s deadline, not N times.
    assert (reserve.pivot, reserve.timeout, reserve.retries, reserve.backoff) == (
        False,
        10.0,
        None,
        0.2,
    )
    assert (reserve.deadline, reserve.max_backoff) == (60.0, 5.0)
    assert (charge.pivot, charge.timeout, charge.retries, charge.backoff) == (True, 90.0, 0, 1.5)
    assert confirm.compensate is None
    assert isinstance(confirm, SagaStep)


def test_start_order_levels(config: ShopConfig) -> None:
    assert config.start_order() == [
        ["users", "payments"],
        ["catalog"],
        ["orders", "search"],
    ]


def test_start_order_of_independent_services(folder: Path) -> None:
    write(
        folder,
        """\
        project: p
        services:
          users: {kind: flask, port: 8001}
          catalog: {kind: flask, port: 8002}
        """,
    )
    assert load_config("shop.yaml", {}).start_order() == [["users", "catalog"]]


def test_service_lookup(config: ShopConfig) -> None:
    assert isinstance(config.service("orders"), ServiceConfig)
    with pytest.raises(UsageError) as info:
        config.service("order")
    assert info.value.message == "no service named 'order' in shop.yaml"
    assert info.value.hint == "did you mean 'orders'?"
    with pytest.raises(UsageError) as info:
        config.service("zzz")
    assert info.value.hint == "services: users, catalog, orders, payments, search"


def test_model_is_frozen(config: ShopConfig) -> None:
    with pytest.raises(pydantic.ValidationError):
        config.project = "other"  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError):
        config.services["users"].port = 1  # type: ignore[misc]


def test_public_dict_is_json_and_resolved(config: ShopConfig) -> None:
    data = config.to_public_dict()
    assert json.loads(json.dumps(data)) == data
    assert set(data) == {"project", "infra", "services", "sagas",
                         "saga_worker", "saga_log"}  # no root, no source
    assert data["services"]["users"]["port"] == 8001
    assert data["services"]["catalog"]["health"]["interval"] == 0.25
    assert data["sagas"]["checkout"]["steps"][1]["timeout"] == 90.0
    assert data["infra"]["consul"] == {
        "enabled": True,
        "image": "shopctl/consul:1.8",
        "port": 8500,
        "version": None,
        "acl": True,
    }


def test_absolute_path_inside_cwd_is_shown_relative(folder: Path) -> None:
    (folder / "conf").mkdir()
    path = write(
        folder, "project: BAD\nservices:\n  users: {kind: flask, port: 8001}\n", "conf/s.yaml"
    )
    with pytest.raises(ConfigError) as info:
        load_config(path, {})
    assert str(info.value).splitlines()[1].startswith("conf/s.yaml:1:1: project: ")


def test_path_outside_cwd_is_shown_as_given(
    folder: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    elsewhere = tmp_path_factory.mktemp("elsewhere") / "shop.yaml"
    elsewhere.write_text("project: BAD\nservices:\n  users: {kind: flask, port: 8001}\n")
    with pytest.raises(ConfigError) as info:
        load_config(elsewhere, {})
    assert str(info.value).splitlines()[0] == f"{elsewhere} is invalid (2 problems):"


def test_error_carries_structured_problems(folder: Path) -> None:
    write(
        folder,
        """\
        project: shop
        services:
          users:
            kind: fastapi
            port: abc
            depens_on: []
        """,
    )
    with pytest.raises(ConfigError) as info:
        load_config("shop.yaml", {})
    error = info.value
    assert isinstance(error, ConfigInvalid)
    assert error.exit_code == 2
    assert error.problems == [
        ConfigProblem(
            "shop.yaml",
            5,
            5,
            "services.users.port",
            "expected an integer from 1 to 65535, found 'abc'",
        ),
        ConfigProblem(
            "shop.yaml",
            6,
            5,
            "services.users.depens_on",
            "unknown key 'depens_on'",
            "did you mean 'depends_on'?",
        ),
    ]
    assert error.to_json()["problems"][0] == {
        "file": "shop.yaml",
        "line": 5,
        "col": 5,
        "path": "services.users.port",
        "message": "expected an integer from 1 to 65535, found 'abc'",
        "hint": None,
    }


def test_find_config_walks_up_to_the_nearest_shop_yaml(folder: Path) -> None:
    write(folder, "project: p\n")
    deep = folder / "services" / "users" / "src"
    deep.mkdir()
    assert find_config(deep) == folder / "shop.yaml"
    with pytest.raises(ConfigError) as info:
        find_config(folder, name="missing.yaml")
    assert str(info.value).splitlines() == [
        "cannot find missing.yaml:",
        f"missing.yaml: no missing.yaml in {folder} or any parent folder",
    ]


def test_a_model_built_in_code_has_working_helpers(folder: Path) -> None:
    config = ShopConfig.model_validate(
        {
            "project": "p",
            "services": {
                "a": {"kind": "flask", "port": 1, "depends_on": ["b"]},
                "b": {"kind": "flask", "port": 2, "depends_on": ["a"]},
            },
        }
    )
    assert config.services["b"].path == "services/b"
    assert config.root == folder
    assert config.source == folder / "shop.yaml"
    with pytest.raises(ConfigError) as info:
        config.start_order()  # load_config refuses cycles; a hand-built model may have one
    assert info.value.message == "dependency cycle among services: a, b"
