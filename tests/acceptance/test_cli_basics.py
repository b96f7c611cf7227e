"""The CLI's contract with its users: exit codes, --version, -f/SHOPCTL_FILE, NO_COLOR,
and configuration errors that read as messages, never as tracebacks."""

from __future__ import annotations

import pytest

from shopctl import __version__

BROKEN = {
    "unknown_key": (
        "project: shop\nservices:\n  users: {kind: flask, port: 8001, path: ., depens_on: []}\n",
        "shop.yaml:3:45: services.users.depens_on: unknown key 'depens_on'",
    ),
    "bad_kind": (
        "project: shop\nservices:\n  users: {kind: django, port: 8001, path: .}\n",
        "shop.yaml:3:11: services.users.kind: "
        "expected one of flask, fastapi, nameko, grpc, found 'django'",
    ),
    "yaml_syntax": (
        "project: shop\nservices:\n  users: {kind: flask\n",
        "shop.yaml:4:1:",
    ),
    "cycle": (
        "project: shop\nservices:\n"
        "  a: {kind: flask, port: 8001, path: ., depends_on: [b]}\n"
        "  b: {kind: flask, port: 8002, path: ., depends_on: [a]}\n",
        "dependency cycle",
    ),
}


def test_shipped_shop_yaml_is_valid(shopctl):
    result = shopctl("-f", "shop.yaml", "config", "validate")
    assert result.returncode == 0, result.stderr
    assert "5 services" in result.stdout


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_config_exits_2_with_position_and_no_traceback(shopctl, tmp_path, name):
    text, expected = BROKEN[name]
    (tmp_path / "shop.yaml").write_text(text)
    result = shopctl("config", "validate", cwd=tmp_path)
    assert result.returncode == 2
    assert expected in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_file_option_and_environment_variable_choose_the_file(shopctl, tmp_path):
    (tmp_path / "other.yaml").write_text("project: [\n")
    by_option = shopctl("-f", str(tmp_path / "other.yaml"), "config", "validate")
    by_env = shopctl("config", "validate", env={"SHOPCTL_FILE": str(tmp_path / "other.yaml")})
    assert by_option.returncode == by_env.returncode == 2
    assert "other.yaml:" in by_option.stderr and "other.yaml:" in by_env.stderr


def test_missing_file_is_a_usage_error(shopctl, tmp_path):
    result = shopctl("config", "validate", cwd=tmp_path)
    assert result.returncode == 2
    assert "shop.yaml: file not found" in result.stderr


def test_version(shopctl):
    result = shopctl("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"shopctl {__version__}"


def test_unknown_command_and_option_exit_2(shopctl):
    assert shopctl("frobnicate").returncode == 2
    assert shopctl("status", "--no-such-flag").returncode == 2


def test_unknown_service_is_a_usage_error_with_hint(shopctl):
    result = shopctl("up", "--dry-run", "--runtime", "local", "user")
    assert result.returncode == 2
    assert "did you mean 'users'" in result.stderr


def test_no_color_is_honoured(shopctl, tmp_path):
    (tmp_path / "shop.yaml").write_text("project: [\n")
    coloured = shopctl("config", "validate", cwd=tmp_path, env={"FORCE_COLOR": "1"})
    plain = shopctl("config", "validate", cwd=tmp_path, env={"FORCE_COLOR": "1", "NO_COLOR": "1"})
    assert "\x1b[" in coloured.stderr  # proves the check below can fail
    assert "\x1b[" not in plain.stderr
    assert plain.returncode == 2


def test_show_json_is_the_resolved_config(shopctl):
    import json

    result = shopctl("config", "show", "--json", env={"SHOP_CONSUL_PORT": "18500"})
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["infra"]["consul"]["port"] == 18500
    assert data["services"]["inventory"]["kind"] == "grpc"
    assert data["services"]["users"]["health"]["path"] == "/health"
