"""Databases of the services' own (issue 16's follow-up), on docker and local.

A project of three scaffolded flask services: `ledger` and `vault` declare `database:
postgresql`, `board` declares nothing, and `infra.postgres.enabled: true` turns the
project's PostgreSQL on (`auto` leaves it off on both runtimes). Each declaring
service (in its container; as a process with its secrets folder) reaches its own
database with the URL in its secret file, and only its own; `board` gets no such
file; a second `up` changes nothing; `down --volumes` leaves no PostgreSQL container,
volume or data folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import docker
import pytest

from shopctl.state import ProjectState
from shopctl.testing import free_ports
from tests.acceptance.test_shop_roundtrip import shopctl_in

pytestmark = [pytest.mark.consul]

DECLARING = ("ledger", "vault")
PYTHON = "/opt/venv/bin/python"  # the service image's
SERVICE_USER = "10001:10001"
# The service's own secret file, wherever its runtime put its SHOP_SECRETS_DIR.
SECRET = "os.path.join(os.environ['SHOP_SECRETS_DIR'], 'database_url')"


@pytest.fixture(scope="module", params=["docker", "local"])
def shop(request, tmp_path_factory):
    runtime = request.param
    root = tmp_path_factory.mktemp(f"databases-{runtime}")
    project = f"pg{uuid.uuid4().hex[:8]}"
    consul, postgres, *ports = free_ports(5)
    made = shopctl_in(root, "init", ".", "--name", project)
    assert made.returncode == 0, made.stderr
    for name, port in zip(("ledger", "vault", "board"), ports, strict=False):
        made = shopctl_in(root, "scaffold", "new-service", name, "--kind", "flask",
                          "--port", str(port))
        assert made.returncode == 0, made.stderr
    for name in DECLARING:  # a service that uses its database brings a driver
        with (root / "services" / name / "requirements.txt").open("a") as reqs:
            reqs.write("psycopg[binary]>=3.1\n")
    (root / "shop.yaml").write_text(
        f"project: {project}\n"
        "infra:\n"
        f"  consul: {{port: {consul}}}\n"
        "  rabbitmq: {enabled: false}\n"
        f"  postgres: {{enabled: true, port: {postgres}}}\n"
        "services:\n"
        f"  ledger: {{kind: flask, port: {ports[0]}, database: postgresql}}\n"
        f"  vault: {{kind: flask, port: {ports[1]}, database: postgresql}}\n"
        f"  board: {{kind: flask, port: {ports[2]}}}\n")
    try:
        up = shopctl_in(root, "up", "--runtime", runtime)
        assert up.returncode == 0, up.stdout[-2000:] + up.stderr[-3000:]
        yield root, project, runtime
    finally:
        shopctl_in(root, "down", "--volumes", "--rmi", "--runtime", runtime, timeout=180)


def run_in(shop, service: str, code: str) -> tuple[int, str]:
    """Python `code` run where the service runs, as it runs: in its container as its
    user (docker), or on the host with its SHOP_SECRETS_DIR (local)."""
    root, project, runtime = shop
    code = "import os\n" + code
    if runtime == "docker":
        container = docker.from_env().containers.get(f"shopctl-{project}-{service}")
        result = container.exec_run([PYTHON, "-c", code], user=SERVICE_USER)
        return result.exit_code, result.output.decode(errors="replace")
    secrets = ProjectState(root).service_secrets_dir(service)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "SHOP_SECRETS_DIR": str(secrets)}, timeout=60)
    return done.returncode, done.stdout + done.stderr


def test_each_declaring_service_reaches_its_own_database_with_its_secret_file(shop):
    root, project, runtime = shop
    for service in DECLARING:
        code, out = run_in(shop, service, f"""
import stat, psycopg
info = os.stat({SECRET})
print(oct(stat.S_IMODE(info.st_mode)), info.st_uid)
with psycopg.connect(open({SECRET}).read().strip()) as conn:
    conn.execute("CREATE TABLE IF NOT EXISTS records (key text PRIMARY KEY)")
    conn.execute("INSERT INTO records VALUES ('k1') ON CONFLICT DO NOTHING")
    print(conn.execute("SELECT current_user, current_database(), inet_server_port(), "
                       "count(*) FROM records").fetchone())
""")
        assert code == 0, out
        if runtime == "docker":
            assert "0o400 10001" in out  # the service's alone
            assert f"('{service}', '{service}', 5432, 1)" in out
            env = docker.from_env().containers.get(f"shopctl-{project}-{service}").attrs[
                "Config"]["Env"]
            assert not any("postgresql://" in entry for entry in env)  # a file, not the env
        else:
            assert f"0o600 {os.geteuid()}" in out
            port = json.loads(shopctl_in(root, "config", "show", "--json").stdout)[
                "infra"]["postgres"]["port"]
            assert f"('{service}', '{service}', {port}, 1)" in out


def test_another_services_role_cannot_enter_a_database_not_its_own(shop):
    code, out = run_in(shop, "vault", f"""
import psycopg
url = open({SECRET}).read().strip()
try:
    psycopg.connect(url.rsplit("/", 1)[0] + "/ledger")
except psycopg.OperationalError as exc:
    print("refused:", exc)
else:
    print("entered")
""")
    assert code == 0, out
    assert "refused:" in out and 'permission denied for database "ledger"' in out, out


def test_a_service_that_declares_nothing_gets_no_database_url(shop):
    code, out = run_in(shop, "board", "print(sorted(os.listdir(os.environ["
                                      "'SHOP_SECRETS_DIR'])))")
    assert code == 0, out
    assert "database_url" not in out and "service_key" in out


def test_up_again_changes_nothing_then_down_volumes_leaves_no_postgres(shop):
    root, project, runtime = shop
    again = shopctl_in(root, "up", "--runtime", runtime, "--json")
    assert again.returncode == 0, again.stderr[-3000:]
    assert {s["action"] for s in json.loads(again.stdout)["plan"]} == {"noop"}
    status = shopctl_in(root, "status", "--runtime", runtime, "--json")
    infra = {row["name"]: row["state"] for row in json.loads(status.stdout)["infra"]}
    assert infra["postgres"] == "running"
    # The data outlived the second `up`: the row written before is still there.
    code, out = run_in(shop, "ledger", f"""
import psycopg
with psycopg.connect(open({SECRET}).read().strip()) as conn:
    print(conn.execute("SELECT count(*) FROM records").fetchone()[0])
""")
    assert (code, out.strip()) == (0, "1")
    down = shopctl_in(root, "down", "--volumes", "--runtime", runtime, timeout=180)
    assert down.returncode == 0, down.stderr
    if runtime == "docker":
        client = docker.from_env()
        label = f"io.shopctl.project={project}"
        assert not client.containers.list(all=True, filters={"label": label})
        assert not client.volumes.list(filters={"label": label})
    else:
        state = ProjectState(root)
        assert not state.data_root.exists()
        assert not state.system_data_dir("_postgres").parent.exists()
