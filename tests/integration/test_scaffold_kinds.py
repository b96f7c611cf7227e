"""For each kind, on a copy of the project: scaffold a service, run its own tests, and
start its main.py and see it healthy. (`shopctl up NAME` with the runtimes is not
covered here yet.)"""

from __future__ import annotations

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
    # pyproject.toml too: it carries the pytest options the generated tests run under.
    for name in ("shop.yaml", "pyproject.toml"):
        shutil.copy2(REPO / name, tmp_path / name)
    for name in ("services", "templates", "protos"):
        shutil.copytree(REPO / name, tmp_path / name, ignore=_SKIP)
    return tmp_path


def _run(project: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("SHOPCTL_FILE", "CONSUL_HTTP_ADDR")}
    return subprocess.run([sys.executable, *args], cwd=project, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("kind", ["fastapi", "flask", "grpc", "nameko"])
def test_a_scaffolded_service_passes_its_own_tests(project, kind):
    # The generated tests include the process test: main.py on a free port, healthy
    # (HTTP /health or grpc.health.v1), then a clean exit on SIGTERM.
    name = f"new-{kind}"
    made = _run(project, "-m", "shopctl", "scaffold", "new-service", name, "--kind", kind)
    assert made.returncode == 0, made.stderr

    tests = _run(project, "-m", "pytest", f"services/{name}", "-q", "-p", "no:cacheprovider",
                 "-rs")

    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert " passed" in tests.stdout and "skipped" not in tests.stdout, tests.stdout
