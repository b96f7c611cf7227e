"""`shopctl scaffold` as a process on a copy of the project: refusals exit 2 and write
nothing; --dry-run shows the files and the shop.yaml diff and writes nothing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
_SKIP = shutil.ignore_patterns("data", "__pycache__", ".pytest_cache", "generated")


@pytest.fixture
def project(tmp_path) -> Path:
    shutil.copy2(REPO / "shop.yaml", tmp_path / "shop.yaml")
    for name in ("services", "templates", "protos"):
        shutil.copytree(REPO / name, tmp_path / name, ignore=_SKIP)
    return tmp_path


def shopctl(project: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "SHOPCTL_FILE"}
    env["NO_COLOR"] = "1"
    return subprocess.run([sys.executable, "-m", "shopctl", *args], cwd=project, env=env,
                          capture_output=True, text=True, timeout=60)


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["Bad_Name", "--kind", "fastapi"], "not a valid service name"),
        (["-reviews", "--kind", "fastapi"], "No such option"),  # click: not even a name
        (["consul", "--kind", "fastapi"], "'consul' is reserved for shopctl's own Consul"),
        (["promsd", "--kind", "flask"], "pick another name; consul, rabbitmq, postgres, prom"),
        (["users", "--kind", "fastapi"], "service 'users' already exists"),
        (["reviews", "--kind", "django"], "unknown kind 'django'"),
        (["reviews", "--kind", "fastapi", "--port", "8001"], "services.users.port"),
        (["reviews", "--kind", "fastapi", "--port", "8500"], "infra.consul.port"),
        (["reviews", "--kind", "fastapi", "--depends-on", "userz"], "no service named 'userz'"),
    ],
)
def test_refusals_exit_2_and_write_nothing(project, args, message):
    before = snapshot(project)

    result = shopctl(project, "scaffold", "new-service", *args)

    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert snapshot(project) == before


def test_an_existing_folder_is_refused_unless_forced(project):
    (project / "services" / "reviews").mkdir()
    before = snapshot(project)

    refused = shopctl(project, "scaffold", "new-service", "reviews", "--kind", "flask")

    assert refused.returncode == 2 and "services/reviews already exists" in refused.stderr
    assert snapshot(project) == before
    forced = shopctl(project, "scaffold", "new-service", "reviews", "--kind", "flask", "--force")
    assert forced.returncode == 0, forced.stderr
    assert (project / "services" / "reviews" / "app.py").is_file()


def test_dry_run_lists_files_and_the_diff_and_writes_nothing(project):
    before = snapshot(project)

    result = shopctl(project, "scaffold", "new-service", "reviews", "--kind", "fastapi",
                     "--depends-on", "users", "--dry-run", "--json")

    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert "services/reviews/main.py" in data["files"]
    assert "+  reviews:\n+    kind: fastapi\n" in data["shop_yaml_diff"]
    assert data["entry"]["depends_on"] == ["users"]
    assert snapshot(project) == before


def test_new_service_writes_files_and_a_valid_shop_yaml(project):
    result = shopctl(project, "scaffold", "new-service", "greeter", "--kind", "grpc")

    assert result.returncode == 0, result.stderr
    assert (project / "protos" / "greeter.proto").is_file()
    check = shopctl(project, "config", "validate", "--json")
    assert check.returncode == 0, check.stdout
    assert "greeter" in json.loads(check.stdout)["services"]


def test_kinds_lists_every_template_folder(project):
    result = shopctl(project, "scaffold", "kinds", "--json")

    assert [k["name"] for k in json.loads(result.stdout)] == ["fastapi", "flask", "grpc",
                                                               "nameko"]
