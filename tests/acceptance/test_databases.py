"""Databases of the services' own (issue 16's follow-up), on the docker runtime.

A project of three scaffolded flask services: `ledger` and `vault` declare `database:
postgresql`, `board` declares nothing, and `infra.postgres.enabled: true` turns the
project's PostgreSQL on (docker's `auto` leaves it off). Each declaring service's
container reaches its own database with the URL in its secret file, and only its own;
`board` gets no such file; a second `up` changes nothing; `down --volumes` leaves no
PostgreSQL container or volume.
"""

from __future__ import annotations

import json
import uuid

import docker
import pytest

from shopctl.testing import free_ports
from tests.acceptance.test_shop_roundtrip import shopctl_in

pytestmark = [pytest.mark.consul]

DECLARING = ("ledger", "vault")
SECRET = "/run/shop-secrets/database_url"
PYTHON = "/opt/venv/bin/python"  # the service image's
SERVICE_USER = "10001:10001"


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    root = tmp_path_factory.mktemp("databases")
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
        up = shopctl_in(root, "up", "--runtime", "docker")
        assert up.returncode == 0, up.stdout[-2000:] + up.stderr[-3000:]
        yield root, project
    finally:
        shopctl_in(root, "down", "--volumes", "--runtime", "docker", timeout=180)


def run_in(project: str, service: str, code: str) -> tuple[int, str]:
    """Python `code` run in the service's container as the service's own user."""
    container = docker.from_env().containers.get(f"shopctl-{project}-{service}")
    result = container.exec_run([PYTHON, "-c", code], user=SERVICE_USER)
    return result.exit_code, result.output.decode(errors="replace")


def test_each_declaring_service_reaches_its_own_database_with_its_secret_file(shop):
    _, project = shop
    for service in DECLARING:
        code, out = run_in(project, service, f"""
import os, stat, psycopg
info = os.stat({SECRET!r})
print(oct(stat.S_IMODE(info.st_mode)), info.st_uid)
with psycopg.connect(open({SECRET!r}).read().strip()) as conn:
    conn.execute("CREATE TABLE IF NOT EXISTS records (key text PRIMARY KEY)")
    conn.execute("INSERT INTO records VALUES ('k1') ON CONFLICT DO NOTHING")
    print(conn.execute("SELECT current_user, current_database(), inet_server_port(), "
                       "count(*) FROM records").fetchone())
""")
        assert code == 0, out
        assert "0o400 10001" in out  # the service's alone
        assert f"('{service}', '{service}', 5432, 1)" in out
        env = docker.from_env().containers.get(f"shopctl-{project}-{service}").attrs[
            "Config"]["Env"]
        assert not any("postgresql://" in entry for entry in env)  # a file, never the env


def test_another_services_role_cannot_enter_a_database_not_its_own(shop):
    _, project = shop
    code, out = run_in(project, "vault", f"""
import psycopg
url = open({SECRET!r}).read().strip()
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
    _, project = shop
    code, out = run_in(project, "board", "import os; print(sorted(os.listdir("
                                         "'/run/shop-secrets')))")
    assert code == 0, out
    assert "database_url" not in out and "service_key" in out


def test_up_again_changes_nothing_then_down_volumes_leaves_no_postgres(shop):
    root, project = shop
    again = shopctl_in(root, "up", "--runtime", "docker", "--json")
    assert again.returncode == 0, again.stderr[-3000:]
    assert {s["action"] for s in json.loads(again.stdout)["plan"]} == {"noop"}
    status = shopctl_in(root, "status", "--runtime", "docker", "--json")
    infra = {row["name"]: row["state"] for row in json.loads(status.stdout)["infra"]}
    assert infra["postgres"] == "running"
    # The data outlived the second `up`: the row written before is still there.
    code, out = run_in(project, "ledger", f"""
import psycopg
with psycopg.connect(open({SECRET!r}).read().strip()) as conn:
    print(conn.execute("SELECT count(*) FROM records").fetchone()[0])
""")
    assert (code, out.strip()) == (0, "1")
    down = shopctl_in(root, "down", "--volumes", "--runtime", "docker", timeout=180)
    assert down.returncode == 0, down.stderr
    client = docker.from_env()
    label = f"io.shopctl.project={project}"
    assert not client.containers.list(all=True, filters={"label": label})
    assert not client.volumes.list(filters={"label": label})
