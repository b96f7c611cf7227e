"""The `database: postgresql` contract as pure functions of the config (shopctl.databases),
its PostgreSQL unit spec (shopctl.infra.docker, shopctl.swarm.specs) and what it adds to
a service's launch spec (shopctl.launch)."""

from __future__ import annotations

from pathlib import Path

import pytest

from shopctl import databases
from shopctl.config import load_config
from shopctl.errors import ConfigError
from shopctl.infra import docker as docker_infra
from shopctl.launch import PLANNING_ENDPOINTS, launch_spec
from shopctl.swarm import specs as swarm_specs


def _config(tmp_path: Path, postgres: str = "{}", ledger: str = "database: postgresql"):
    for name in ("ledger", "board"):
        (tmp_path / "services" / name).mkdir(parents=True, exist_ok=True)
    (tmp_path / "shop.yaml").write_text(
        f"project: unit\ninfra: {{postgres: {postgres}}}\nservices:\n"
        f"  ledger: {{kind: flask, port: 18001, {ledger}}}\n"
        "  board: {kind: flask, port: 18002}\n")
    return load_config(tmp_path / "shop.yaml")


@pytest.mark.parametrize(("setting", "declared", "expected"), [
    ("auto", True, {"docker": False, "local": False, "swarm": True}),
    ("auto", False, {"docker": False, "local": False, "swarm": False}),
    ("true", False, {"docker": True, "local": True, "swarm": True}),
    ("false", True, {"docker": False, "local": False, "swarm": False}),
])
def test_auto_is_on_only_on_the_swarm_and_only_when_a_service_declares_a_database(
        tmp_path, setting, declared, expected):
    config = _config(tmp_path, f"{{enabled: {setting}}}",
                     "database: postgresql" if declared else "tags: []")
    assert {runtime: databases.enabled(config, runtime) for runtime in expected} == expected


@pytest.mark.parametrize(("postgres", "ledger", "where", "message"), [
    ("{enabled: sometimes}", "database: postgresql", "2:20",
     "infra.postgres.enabled: expected auto, true or false, found 'sometimes'"),
    ("{port: 0}", "database: postgresql", "2:20",
     "infra.postgres.port: expected an integer from 1 to 65535, found 0"),
    ("{}", "database: postgres", "4:38",
     "services.ledger.database: expected postgresql, found 'postgres'"),
    ("{}", "database: [postgresql]", "4:38",
     "services.ledger.database: expected postgresql, found"),
])
def test_bad_values_are_config_errors_naming_file_line_and_field(tmp_path, postgres, ledger,
                                                                 where, message):
    with pytest.raises(ConfigError) as caught:
        _config(tmp_path, postgres, ledger)
    assert f"shop.yaml:{where}: {message}" in str(caught.value)


def test_a_typo_in_the_database_gets_a_did_you_mean(tmp_path):
    with pytest.raises(ConfigError) as caught:
        _config(tmp_path, "{}", "database: postgres")
    assert "hint: did you mean 'postgresql'?" in str(caught.value)


def test_roles_are_identifiers_that_need_no_quoting_and_never_pg_(tmp_path):
    assert databases.role_name("order-history") == "order_history"
    assert databases.role_name("pg-cache") == "s_pg_cache"
    # names PostgreSQL keeps for itself or reads as special roles in GRANT/REVOKE
    for taken in ("public", "none", "template1", "current-user"):
        assert databases.role_name(taken) == "s_" + taken.replace("-", "_")
    assert "_" in databases.SUPERUSER  # no service name has one: no role meets it


def test_provisioning_quotes_identifiers_and_passwords_and_shuts_out_public():
    fresh = [s.as_string(None) for s in databases.statements('we"ird', "p'w", False, False)]
    assert fresh == [
        "CREATE ROLE \"we\"\"ird\" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE "
        "PASSWORD 'p''w'",
        "CREATE DATABASE \"we\"\"ird\" OWNER \"we\"\"ird\"",
        "REVOKE ALL ON DATABASE \"we\"\"ird\" FROM PUBLIC",
    ]
    again = [s.as_string(None) for s in databases.statements("ledger", "pw", True, True)]
    assert again[0].startswith('ALTER ROLE "ledger" WITH LOGIN') and len(again) == 2


def test_only_a_declaring_service_gets_a_database_url_and_it_changes_its_hash(tmp_path):
    config = _config(tmp_path, "{enabled: true}")
    ledger = launch_spec(config, "ledger", PLANNING_ENDPOINTS, "jwt", "docker")
    board = launch_spec(config, "board", PLANNING_ENDPOINTS, "jwt", "docker")
    password = databases.password(config, "ledger")
    assert ledger.secrets["database_url"] == (
        f"postgresql://ledger:{password}@postgres:5432/ledger")
    assert "database_url" not in board.secrets
    assert password not in repr(ledger)  # secrets are left out of reprs
    local = launch_spec(config, "ledger", PLANNING_ENDPOINTS, "jwt", "local")
    assert local.secrets["database_url"].endswith("@127.0.0.1:5432/ledger")
    # PostgreSQL off (docker's auto): the service keeps its data folder and restarts
    # once, without its url; the others are not touched.
    off = _config(tmp_path, "{enabled: auto}")
    assert "database_url" not in launch_spec(off, "ledger", PLANNING_ENDPOINTS, "jwt",
                                             "docker").secrets
    assert launch_spec(off, "ledger", PLANNING_ENDPOINTS, "jwt",
                       "docker").config_hash != ledger.config_hash
    assert launch_spec(off, "board", PLANNING_ENDPOINTS, "jwt",
                       "docker").config_hash == board.config_hash
    assert databases.password(off, "ledger") == password  # made once


def test_the_postgres_unit_runs_unprivileged_with_its_data_on_a_volume(tmp_path):
    config = _config(tmp_path, "{enabled: auto, port: 15432}")
    assert "postgres" not in [u.name for u in docker_infra.units(config)]
    swarm = {u.name: u for u in docker_infra.units(config, "swarm")}
    unit = swarm["postgres"]
    assert list(swarm) == ["consul", "rabbitmq", "postgres"]
    assert unit.user == "999:999" and unit.volumes == {"postgres": "/var/lib/postgresql/data"}
    assert unit.readiness.kind == "postgres" and unit.ports[0].host == 15432
    secret = databases.superuser_password(config)
    assert secret not in repr(unit) and not any(secret in v for v in unit.env.values())
    assert unit.files["/run/shopctl"]["postgres-password"] == secret.encode()
    assert unit.files_owner == (999, 999) and unit.files_mode == 0o400
    assert docker_infra.units(config, "swarm")[2].config_hash == unit.config_hash
    body = swarm_specs.unit_service_spec(config, unit, secrets=[])
    container = body["TaskTemplate"]["ContainerSpec"]
    assert container["User"] == "999:999"
    assert container["Mounts"][0]["Source"] == "shopctl-unit-postgres-data"
    assert body["EndpointSpec"]["Ports"] == [{"Protocol": "tcp", "TargetPort": 5432,
                                              "PublishedPort": 15432, "PublishMode": "host"}]
    assert body["TaskTemplate"]["Placement"] == {"Constraints": ["node.role==manager"]}


def test_the_local_unit_never_runs_the_server_as_root(tmp_path, monkeypatch):
    from shopctl.infra import local as local_infra
    from shopctl.state import ProjectState

    monkeypatch.setattr(local_infra, "postgres_binaries", lambda: "/usr/lib/postgresql/15/bin")
    monkeypatch.setattr(local_infra, "_server_user", lambda: None)
    config = _config(tmp_path, "{enabled: true, port: 15433}")
    state = ProjectState(tmp_path)
    folder = state.data_dir("_postgres")
    secret = databases.superuser_password(config)
    monkeypatch.setattr(local_infra.os, "geteuid", lambda: 0)
    as_root = local_infra.postgres(config, state)
    # root's .shopctl is closed to the server user: its data lives where it reaches it
    assert as_root.argv[:2] == ("sh", "-c") and "setpriv --reuid=" in as_root.argv[2]
    assert as_root.env["PG_USER"] == "postgres"
    assert as_root.env["PGDATA"] == str(state.system_data_dir("_postgres") / "data")
    assert not any(secret in value for value in as_root.env.values())
    monkeypatch.setattr(local_infra.os, "geteuid", lambda: 1000)
    as_user = local_infra.postgres(config, state)
    assert as_user.argv == ("sh", str(folder / "start.sh"))
    assert as_user.env["PGDATA"] == str(folder / "data")
    assert as_user.env["PG_PASSWORD_FILE"] == str(state.secrets_dir / "postgres" / "_superuser")
    assert as_user.readiness.port == 15433 and as_user.config_hash != as_root.config_hash
    assert "postgres" in [u.name for u in local_infra.units(config, local_infra.Options(
        python="/bin/python3", free_port=lambda: 40000, running_ports={}))]
