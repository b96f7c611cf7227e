"""Broken shop.yaml files: each reports exactly the expected located problems."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from shopctl.config import ConfigInvalid, load_config
from shopctl.config.yamlpos import MAX_NODES
from shopctl.errors import ConfigError

SERVICE_DIRS = ("users", "catalog", "orders", "payments", "a", "b", "c")


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for name in SERVICE_DIRS:
        (tmp_path / "services" / name).mkdir(parents=True)
    return tmp_path


def message_of(path: str | Path, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path, env or {})
    assert isinstance(info.value, ConfigInvalid)
    assert info.value.exit_code == 2
    return str(info.value).splitlines()


def invalid(folder: Path, text: str, env: dict[str, str] | None = None) -> list[str]:
    """Write shop.yaml, load it, check the header, return the problem lines."""
    (folder / "shop.yaml").write_text(textwrap.dedent(text), encoding="utf-8")
    header, *lines = message_of("shop.yaml", env)
    count = sum(1 for line in lines if not line.startswith("  hint: "))
    assert header == f"shop.yaml is invalid ({count} problem{'' if count == 1 else 's'}):"
    return lines


CASES = {
    "unknown top-level key, with a hint": (
        """\
        project: shop
        services:
          users: {kind: fastapi, port: 8001}
        saga: {}
        """,
        [
            "shop.yaml:4:1: saga: unknown key 'saga'",
            "  hint: did you mean 'sagas'?",
        ],
    ),
    "unknown service key, with a hint": (
        """\
        project: shop
        services:
          users:
            kind: fastapi
            port: 8001
            depens_on: [catalog]
          catalog: {kind: flask, port: 8002}
        """,
        [
            "shop.yaml:6:5: services.users.depens_on: unknown key 'depens_on'",
            "  hint: did you mean 'depends_on'?",
        ],
    ),
    "unknown key without a close match lists the allowed keys": (
        """\
        project: shop
        services:
          users:
            kind: fastapi
            port: 8001
            health: {path: /health, wobble: 3}
        """,
        [
            "shop.yaml:6:29: services.users.health.wobble: unknown key 'wobble'",
            "  hint: allowed keys here: path, interval, timeout, start_period",
        ],
    ),
    "bad kind lists the allowed kinds": (
        """\
        project: shop
        services:
          users:
            kind: django
            port: 8001
        """,
        [
            "shop.yaml:4:5: services.users.kind: expected one of flask, fastapi, nameko, grpc,"
            " found 'django'",
        ],
    ),
    "misspelt kind gets a hint": (
        """\
        project: shop
        services:
          users: {kind: FastAPI, port: 8001}
        """,
        [
            "shop.yaml:3:11: services.users.kind: expected one of flask, fastapi, nameko, grpc,"
            " found 'FastAPI'",
            "  hint: did you mean 'fastapi'?",
        ],
    ),
    "port not an integer": (
        """\
        project: shop
        services:
          users:
            kind: fastapi
            port: abc
        """,
        ["shop.yaml:5:5: services.users.port: expected an integer from 1 to 65535, found 'abc'"],
    ),
    "port out of range": (
        """\
        project: shop
        services:
          users:
            kind: fastapi
            port: 70000
        """,
        ["shop.yaml:5:5: services.users.port: expected an integer from 1 to 65535, found 70000"],
    ),
    "missing kind": (
        """\
        project: shop
        services:
          users:
            port: 8001
        """,
        [
            "shop.yaml:3:3: services.users.kind: required key is missing",
            "  hint: one of flask, fastapi, nameko, grpc",
        ],
    ),
    "missing project": (
        """\
        services:
          users: {kind: flask, port: 8001}
        """,
        [
            "shop.yaml:1:1: project: required key is missing",
            "  hint: a short lowercase name for the shop, e.g. project: myshop",
        ],
    ),
    "project is not a DNS label": (
        """\
        project: My Shop
        services:
          users: {kind: flask, port: 8001}
        """,
        [
            "shop.yaml:1:1: project: expected a name of lowercase letters, digits and hyphens"
            " (at most 40), found 'My Shop'",
            "  hint: try 'my-shop'",
        ],
    ),
    "service name is not a DNS label": (
        """\
        project: shop
        services:
          Users: {kind: flask, port: 8001, path: services/users}
        """,
        [
            "shop.yaml:3:3: services.Users: expected a service name of lowercase letters, digits"
            " and hyphens, starting with a letter (at most 63), found 'Users'",
            "  hint: try 'users'",
        ],
    ),
    "service name reserved for infra": (
        """\
        project: shop
        services:
          users: {kind: fastapi, port: 8001}
          consul:
            kind: flask
            port: 8002
        """,
        [
            "shop.yaml:4:3: services.consul: the service name 'consul' is reserved for shopctl's"
            " own Consul",
            "  hint: pick another name; consul, rabbitmq, postgres, prometheus, promsd are taken by"
            " shopctl's infra",
        ],
    ),
    "service name reserved for the Prometheus bridge": (
        """\
        project: shop
        services:
          users: {kind: fastapi, port: 8001, depends_on: [promsd]}
          promsd: {kind: flask, port: 8002, path: services/users}
        """,
        [
            "shop.yaml:4:3: services.promsd: the service name 'promsd' is reserved for shopctl's"
            " own Consul-to-Prometheus bridge (http_sd)",
            "  hint: pick another name; consul, rabbitmq, postgres, prometheus, promsd are taken by"
            " shopctl's infra",
        ],
    ),
    "a service that is not a mapping": (
        """\
        project: shop
        services:
          users: 8001
        """,
        ["shop.yaml:3:3: services.users: expected a mapping, found 8001"],
    ),
    "bad boolean": (
        """\
        project: shop
        infra:
          consul:
            enabled: maybe
        services:
          users: {kind: flask, port: 8001}
        """,
        ["shop.yaml:4:5: infra.consul.enabled: expected true or false, found 'maybe'"],
    ),
    "string field given a number": (
        """\
        project: shop
        infra:
          base_image: 3.12
        services:
          users: {kind: flask, port: 8001}
        """,
        [
            "shop.yaml:3:3: infra.base_image: expected a string, found 3.12",
            "  hint: put the value in quotes",
        ],
    ),
    "env value that is a list, env name that is not a name": (
        """\
        project: shop
        services:
          users:
            kind: flask
            port: 8001
            env:
              HOSTS: [a, b]
              bad-name: x
        """,
        [
            "shop.yaml:7:7: services.users.env.HOSTS: expected a string, number or true/false,"
            " found a list",
            "shop.yaml:8:7: services.users.env.bad-name: expected an environment variable name"
            " (letters, digits, _), found 'bad-name'",
        ],
    ),
    "replicas below one": (
        """\
        project: shop
        services:
          users: {kind: flask, port: 8001, replicas: 0}
        """,
        ["shop.yaml:3:36: services.users.replicas: expected an integer of at least 1, found 0"],
    ),
    "depends_on an unknown service, with a hint": (
        """\
        project: shop
        services:
          users: {kind: flask, port: 8001}
          orders:
            kind: nameko
            port: 8002
            depends_on: [users, user]
        """,
        [
            "shop.yaml:7:25: services.orders.depends_on[1]: expected a service defined under"
            " services, found 'user'",
            "  hint: did you mean 'users'?",
        ],
    ),
    "self-dependency": (
        """\
        project: shop
        services:
          users:
            kind: flask
            port: 8001
            depends_on:
              - users
        """,
        [
            "shop.yaml:7:9: services.users.depends_on[0]: a service cannot depend on itself,"
            " found 'users'",
        ],
    ),
    "cycle of three": (
        """\
        project: shop
        services:
          a: {kind: flask, port: 8001, depends_on: [b]}
          b: {kind: flask, port: 8002, depends_on: [c]}
          c: {kind: flask, port: 8003, depends_on: [a]}
          users: {kind: flask, port: 8004, depends_on: [a]}
        """,
        [
            "shop.yaml:3:32: services.a.depends_on: dependency cycle a -> b -> c -> a",
            "  hint: services in a cycle can never start; remove one of these dependencies",
        ],
    ),
    "duplicate host port between services": (
        """\
        project: shop
        services:
          users:
            kind: flask
            port: 8001
          catalog:
            kind: flask
            port: 8001
        """,
        [
            "shop.yaml:8:5: services.catalog.port: port 8001 is used by both services.users.port"
            " and services.catalog.port",
        ],
    ),
    "duplicate host port with a default infra port and a metrics port": (
        """\
        project: shop
        services:
          users: {kind: flask, port: 5672}
          payments: {kind: grpc, port: 50051, metrics_port: 50051}
        """,
        [
            "shop.yaml:3:24: services.users.port: port 5672 is used by both infra.rabbitmq.port"
            " and services.users.port",
            "shop.yaml:4:39: services.payments.metrics_port: port 50051 is used by both"
            " services.payments.port and services.payments.metrics_port",
        ],
    ),
    "a disabled infra service frees its port": (
        """\
        project: shop
        infra:
          consul: {enabled: false}
        services:
          users: {kind: flask, port: 8500}
          catalog: {kind: flask, port: 9090}
          orders: {kind: flask, port: 5672}
        """,
        [
            "shop.yaml:7:25: services.orders.port: port 5672 is used by both infra.rabbitmq.port"
            " and services.orders.port",
        ],
    ),
    "service path that does not exist": (
        """\
        project: shop
        services:
          users:
            kind: flask
            port: 8001
            path: services/nowhere
        """,
        [
            "shop.yaml:6:5: services.users.path: service path services/nowhere does not exist",
            "  hint: paths are relative to the folder holding shop.yaml",
        ],
    ),
    "default service path that does not exist": (
        """\
        project: shop
        services:
          search: {kind: flask, port: 8001}
        """,
        [
            "shop.yaml:3:3: services.search: service path services/search does not exist",
            "  hint: paths are relative to the folder holding shop.yaml",
        ],
    ),
    "saga call to an unknown service, with a hint": (
        """\
        project: shop
        services:
          payments: {kind: grpc, port: 50051}
        sagas:
          checkout:
            steps:
              - name: charge
                call: payment.charge
        """,
        [
            "shop.yaml:8:9: sagas.checkout.steps[0].call: expected a service defined under"
            " services, found 'payment' in 'payment.charge'",
            "  hint: did you mean 'payments'?",
        ],
    ),
    "saga compensation on an unknown service": (
        """\
        project: shop
        services:
          orders: {kind: nameko, port: 8001}
        sagas:
          checkout:
            steps:
              - {name: create, call: orders.create, compensate: billing.refund}
        """,
        [
            "shop.yaml:7:45: sagas.checkout.steps[0].compensate: expected a service defined"
            " under services, found 'billing' in 'billing.refund'",
            "  hint: services defined: orders",
        ],
    ),
    "saga call not in SERVICE.ACTION form": (
        """\
        project: shop
        services:
          orders: {kind: nameko, port: 8001}
        sagas:
          checkout:
            steps:
              - name: create
                call: orders
        """,
        [
            "shop.yaml:8:9: sagas.checkout.steps[0].call: expected SERVICE.ACTION like"
            " 'shipping.book_slot', found 'orders'",
        ],
    ),
    "duplicate step names": (
        """\
        project: shop
        services:
          orders: {kind: nameko, port: 8001}
        sagas:
          checkout:
            steps:
              - {name: create, call: orders.create}
              - {name: confirm, call: orders.confirm}
              - {name: create, call: orders.create_again}
        """,
        [
            "shop.yaml:9:10: sagas.checkout.steps[2].name: step name 'create' is already used"
            " by steps[0]",
        ],
    ),
    "two pivots": (
        """\
        project: shop
        services:
          orders: {kind: nameko, port: 8001}
        sagas:
          checkout:
            steps:
              - {name: create, call: orders.create, pivot: true}
              - {name: confirm, call: orders.confirm, pivot: true}
        """,
        [
            "shop.yaml:8:47: sagas.checkout.steps[1].pivot: saga 'checkout' already has a pivot"
            " step (steps[0]); at most one step can be the pivot",
        ],
    ),
    "a saga without steps": (
        """\
        project: shop
        services:
          orders: {kind: nameko, port: 8001}
        sagas:
          checkout:
            steps: []
        """,
        ["shop.yaml:6:5: sagas.checkout.steps: expected at least one step, found none"],
    ),
    "bad duration": (
        """\
        project: shop
        services:
          users:
            kind: flask
            port: 8001
            health:
              interval: 5 parsecs
        """,
        [
            "shop.yaml:7:7: services.users.health.interval: expected a duration like 5s or 250ms,"
            " found '5 parsecs'",
        ],
    ),
    "YAML syntax error": (
        """\
        project: shop
        services:
          users: {kind: flask, port: 8001
        """,
        [
            "shop.yaml:4:1: invalid YAML: expected ',' or '}', but got '<stream end>'"
            " (while parsing a flow mapping at line 3, column 10)",
        ],
    ),
    "tab indentation": (
        "project: shop\nservices:\n\tusers: {kind: flask, port: 8001}\n",
        [
            "shop.yaml:3:1: invalid YAML: found character '\\t' that cannot start any token"
            " (while scanning for the next token)",
            "  hint: indent with spaces; YAML does not allow tabs for indentation",
        ],
    ),
    "top level is a list": (
        """\
        - project: shop
        - services: {}
        """,
        ["shop.yaml:1:1: expected a mapping of keys like 'project:' and 'services:', found a list"],
    ),
    "only comments": (
        "# project: shop\n\n",
        ["shop.yaml: file is empty (only comments or blanks)"],
    ),
    "duplicate key": (
        """\
        project: shop
        services:
          users:
            kind: flask
            port: 8001
            kind: grpc
        """,
        [
            "shop.yaml:6:5: services.users.kind: key 'kind' is defined twice, at lines 4 and 6",
            "  hint: remove one of them; YAML would silently keep only one",
        ],
    ),
    "recursive alias": (
        """\
        project: shop
        loop: &loop
          again: *loop
        """,
        [
            "shop.yaml:2:7: a YAML alias refers to a node that contains it (a recursive alias)",
        ],
    ),
    "unsupported tag": (
        """\
        project: !!python/name:os.system shop
        services:
          users: {kind: flask, port: 8001}
        """,
        ["shop.yaml:1:10: project: unsupported YAML tag tag:yaml.org,2002:python/name:os.system"],
    ),
    "unset variable without a default": (
        """\
        project: shop
        services:
          users:
            kind: flask
            port: ${USERS_PORT}
        """,
        [
            "shop.yaml:5:5: services.users.port: variable USERS_PORT is not set"
            " (use ${USERS_PORT:-default} for a default)",
        ],
    ),
    "required variable with a message": (
        """\
        project: ${PROJECT:?set PROJECT to your shop's name}
        services:
          users: {kind: flask, port: 8001}
        """,
        ["shop.yaml:1:1: project: variable PROJECT is not set: set PROJECT to your shop's name"],
    ),
    "unclosed interpolation": (
        """\
        project: shop
        services:
          users:
            kind: flask
            port: 8001
            env: {URL: "http://${HOST:-localhost"}
        """,
        [
            "shop.yaml:6:11: services.users.env.URL: unclosed '${' in 'http://${HOST:-localhost'",
            "  hint: close it with '}'",
        ],
    ),
    "a lone dollar": (
        """\
        project: shop
        services:
          users:
            kind: flask
            port: 8001
            env: {PRICE: 5$}
        """,
        [
            "shop.yaml:6:11: services.users.env.PRICE: '$' at character 2 of '5$' starts no"
            " variable",
            "  hint: write $$ for a literal $",
        ],
    ),
    "interpolated value that then fails validation": (
        """\
        project: shop
        services:
          users:
            kind: flask
            port: ${USERS_PORT:-eighty}
        """,
        ["shop.yaml:5:5: services.users.port: expected an integer from 1 to 65535, found 'eighty'"],
    ),
}


@pytest.mark.parametrize(("text", "expected"), CASES.values(), ids=CASES.keys())
def test_broken_config(folder: Path, text: str, expected: list[str]) -> None:
    assert invalid(folder, text) == expected


@pytest.mark.parametrize(("text", "expected"), CASES.values(), ids=CASES.keys())
def test_broken_config_through_the_cli_exits_2_without_traceback(
    folder: Path, text: str, expected: list[str], capsys, monkeypatch
) -> None:
    from shopctl.cli import main

    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "400")
    (folder / "shop.yaml").write_text(textwrap.dedent(text), encoding="utf-8")
    with pytest.raises(SystemExit) as info:
        main(["-f", str(folder / "shop.yaml"), "config", "validate"])
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert "Traceback" not in err
    for line in expected:
        assert line in err


def test_reserved_service_names_cover_every_infra_unit(tmp_path) -> None:
    """The docker runtime names containers shopctl-P-NAME for services and infra alike:
    every unit the infra builders make (everything enabled) has a reserved name."""
    from shopctl.config import load_config
    from shopctl.infra import docker as docker_infra
    from shopctl.infra_names import RESERVED_SERVICE_NAMES, START_ORDER

    (tmp_path / "services" / "users").mkdir(parents=True)
    (tmp_path / "shop.yaml").write_text(
        "project: shop\ninfra: {prometheus: {enabled: true}, postgres: {enabled: true}}\n"
        "services:\n  users: {kind: flask, port: 8001}\n")
    config = load_config(tmp_path / "shop.yaml")
    names = {spec.name for spec in docker_infra.units(config)}
    assert names == RESERVED_SERVICE_NAMES == set(START_ORDER)


def test_a_reserved_service_name_is_refused_by_the_model_itself() -> None:
    """Also for a config built in code, so no runtime has to check again."""
    from pydantic import ValidationError

    from shopctl.config import ShopConfig

    data = {"project": "shop", "services": {"rabbitmq": {"kind": "flask", "port": 8001}}}
    with pytest.raises(ValidationError, match="reserved for shopctl's own RabbitMQ"):
        ShopConfig.model_validate(data)


def test_alias_bomb_is_refused(folder: Path) -> None:
    lines = ["project: shop", 'a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level, previous in zip("bcdefghi", "abcdefgh", strict=True):
        lines.append(f"{level}: &{level} [" + ", ".join([f"*{previous}"] * 8) + "]")
    lines.append("services: {users: {kind: flask, port: 8001, config: {bomb: *i}}}")
    (folder / "shop.yaml").write_text("\n".join(lines) + "\n")
    header, problem = message_of("shop.yaml")
    assert header == "shop.yaml is invalid (1 problem):"
    assert problem.endswith(
        f": YAML aliases expand to more than {MAX_NODES} nodes (an alias bomb?)"
    )


def test_many_problems_at_once_sorted_by_line(folder: Path) -> None:
    lines = invalid(
        folder,
        """\
        project: shop
        services:
          users:
            kind: flask
            port: ${USERS_PORT}
            depends_on: [catalog]
          catalog:
            kind: fastpi
            port: 8002
            depends_on: [users]
            tags: kiosk
        sagas:
          checkout:
            steps:
              - {name: one, call: users.go, pivot: true, retries: -1}
              - {name: two, call: shipping.go, pivot: true}
        extra: 1
        """,
    )
    assert lines == [
        "shop.yaml:5:5: services.users.port: variable USERS_PORT is not set"
        " (use ${USERS_PORT:-default} for a default)",
        "shop.yaml:6:5: services.users.depends_on: dependency cycle users -> catalog -> users",
        "  hint: services in a cycle can never start; remove one of these dependencies",
        "shop.yaml:8:5: services.catalog.kind: expected one of flask, fastapi, nameko, grpc,"
        " found 'fastpi'",
        "  hint: did you mean 'fastapi'?",
        "shop.yaml:11:5: services.catalog.tags: expected a list, found 'kiosk'",
        "shop.yaml:15:50: sagas.checkout.steps[0].retries: expected an integer of at least 0,"
        " found -1",
        "shop.yaml:16:21: sagas.checkout.steps[1].call: expected a service defined under"
        " services, found 'shipping' in 'shipping.go'",
        "  hint: services defined: users, catalog",
        "shop.yaml:16:40: sagas.checkout.steps[1].pivot: saga 'checkout' already has a pivot"
        " step (steps[0]); at most one step can be the pivot",
        "shop.yaml:17:1: extra: unknown key 'extra'",
        "  hint: allowed keys here: project, infra, services, sagas, saga_worker, saga_log",
    ]


# Problems with the file itself, before any YAML is read.


def test_missing_file(folder: Path) -> None:
    assert message_of("nope.yaml") == [
        "cannot read nope.yaml:",
        "nope.yaml: file not found",
        "  hint: create it, or give the path of your shop.yaml",
    ]


def test_directory_instead_of_a_file(folder: Path) -> None:
    (folder / "conf").mkdir()
    (folder / "conf" / "shop.yaml").write_text("project: shop\n")
    assert message_of("conf") == [
        "cannot read conf:",
        "conf: is a directory, not a file",
        "  hint: did you mean conf/shop.yaml?",
    ]


def test_empty_file(folder: Path) -> None:
    (folder / "shop.yaml").write_text("  \n\n")
    assert message_of("shop.yaml") == [
        "cannot read shop.yaml:",
        "shop.yaml: file is empty",
        "  hint: it needs at least 'project' and 'services'",
    ]


def test_non_utf8_bytes_report_their_line(folder: Path) -> None:
    (folder / "shop.yaml").write_bytes(b"project: shop\nservices:\n  caf\xe9: {}\n")
    assert message_of("shop.yaml") == [
        "cannot read shop.yaml:",
        "shop.yaml:3:6: file is not valid UTF-8 (byte 0xe9)",
        "  hint: save the file with UTF-8 encoding",
    ]


def test_control_character(folder: Path) -> None:
    (folder / "shop.yaml").write_text("project: shop\x00\n")
    assert message_of("shop.yaml") == [
        "shop.yaml is invalid (1 problem):",
        "shop.yaml:1:14: invalid YAML: the control character U+0000 is not allowed",
    ]


def test_file_too_large(folder: Path) -> None:
    (folder / "shop.yaml").write_text("project: shop\n" + "#" * (1024 * 1024))
    assert message_of("shop.yaml") == [
        "cannot read shop.yaml:",
        f"shop.yaml: file is too large ({1024 * 1024 + 14} bytes; the limit is 1048576)",
    ]


def test_bom_is_accepted(folder: Path) -> None:
    (folder / "shop.yaml").write_bytes(
        b"\xef\xbb\xbfproject: shop\nservices:\n  users: {kind: flask, port: 8001}\n"
    )
    assert load_config("shop.yaml", {}).project == "shop"


def test_a_new_project_without_services_is_valid(folder: Path) -> None:
    """What `shopctl init` writes: infra and no services yet (scaffold adds them)."""
    (folder / "shop.yaml").write_text("project: fresh\nservices: {}\n", encoding="utf-8")
    config = load_config("shop.yaml", {})
    assert config.services == {} and config.start_order() == []
    (folder / "shop.yaml").write_text("project: fresh\n", encoding="utf-8")
    assert load_config("shop.yaml", {}).services == {}
