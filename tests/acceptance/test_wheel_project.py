"""A new project from nothing with shopctl installed as a wheel (a fresh venv, nothing of
this checkout on its path), in empty folders outside the checkout:

- `init`, `scaffold new-service` of each kind, `up` on docker and on the local runtime:
  every service passing in Consul (asked over Consul's own HTTP API), the generated
  tests pass against the kit the wheel ships, and `down` leaves nothing;
- `init --demo`, `up`, then the README's order-saga example completes.
The templates, the service kit and the demo all come from the wheel.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from shopctl.config import load_config
from shopctl.testing import consul_services, fresh_ports, wait_for
from tests.acceptance.conftest import run_wheel
from tests.acceptance.test_shop_roundtrip import assert_nothing_left

pytestmark = [pytest.mark.docker, pytest.mark.consul, pytest.mark.rabbitmq]

KINDS = {"flask": "front-desk", "fastapi": "parcel-api", "nameko": "dispatch",
         "grpc": "scales"}


def site_packages(venv: Path) -> Path:
    (found,) = (venv / "lib").glob("python3*/site-packages")
    return found


@pytest.fixture
def new_project(tmp_path, wheel_venv):
    root = tmp_path / "parcels"
    name = f"w{uuid.uuid4().hex[:8]}"
    made = run_wheel(wheel_venv, "init", str(root), "--name", name, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert not (root / "templates").exists() and not (root / "services" / "shopkit").exists()
    for kind, service in KINDS.items():
        done = run_wheel(wheel_venv, "scaffold", "new-service", service, "--kind", kind,
                         cwd=root)
        assert done.returncode == 0, done.stderr
    yield root, fresh_ports(root)
    for runtime in ("docker", "local"):
        run_wheel(wheel_venv, "down", "--volumes", "--rmi", "--runtime", runtime, cwd=root,
                  timeout=180)


@pytest.mark.parametrize("runtime", ["docker", "local"])
def test_init_scaffold_every_kind_and_up_from_the_wheel(new_project, wheel_venv, runtime):
    root, data = new_project
    up = run_wheel(wheel_venv, "up", "--runtime", runtime, cwd=root, timeout=1200)
    assert up.returncode == 0, up.stdout[-2000:] + up.stderr[-3000:]
    assert consul_services(data["infra"]["consul"]["port"], data["project"],
                           root) == dict.fromkeys(
        KINDS.values(), "passing")
    if runtime == "local":
        # The wheel's venv has none of the services' requirements: the runtime made the
        # project a venv of its own, and the kit came from the wheel, not from a copy.
        status = json.loads(run_wheel(wheel_venv, "status", "--json", cwd=root).stdout)
        assert {row["state"] for row in status["services"]} == {"running"}
        assert (root / ".shopctl" / "local" / "venv" / "bin" / "python").exists()

    # The generated tests pass against the kit the wheel ships (first on the path).
    kit = site_packages(wheel_venv) / "shopctl" / "_bundle" / "shopkit"
    env = {**os.environ, "PYTHONPATH": str(kit)}
    for service in KINDS.values():
        tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                str(root / "services" / service)], cwd=root, env=env,
                               capture_output=True, text=True, timeout=600)
        assert tests.returncode == 0, tests.stdout[-3000:]
        assert " passed" in tests.stdout and "skipped" not in tests.stdout

    down = run_wheel(wheel_venv, "down", "--volumes", "--rmi", "--runtime", runtime, cwd=root,
                     timeout=180)
    assert down.returncode == 0, down.stderr[-2000:]
    assert_nothing_left(runtime, root, data)


def test_init_demo_from_the_wheel_runs_the_readme_order_saga(tmp_path, wheel_venv):
    root = tmp_path / "demo"
    name = f"d{uuid.uuid4().hex[:8]}"
    made = run_wheel(wheel_venv, "init", str(root), "--demo", "--name", name, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    data = fresh_ports(root)
    try:
        up = run_wheel(wheel_venv, "up", "--runtime", "docker", cwd=root, timeout=1500)
        assert up.returncode == 0, up.stdout[-2000:] + up.stderr[-3000:]
        # The README's example, word for word but for --json.
        run = run_wheel(wheel_venv, "saga", "run", "order", "-i", "user_id=u-1", "-i",
                        'items=[{"sku": "SKU-MUG-001", "qty": 2}]', "--json", cwd=root)
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
        saga = json.loads(run.stdout)
        assert saga["status"] == "completed"
        shipped = [e for e in saga["events"] if e["step"] == "ship" and e["state"] == "succeeded"]
        assert shipped and shipped[0]["result"]["order_status"] == "SHIPPED"
        port = data["infra"]["consul"]["port"]
        wait_for(lambda: consul_services(port, name, root) == dict.fromkeys(
            data["services"], "passing"), 30, "every demo service passing")
    finally:
        down = run_wheel(wheel_venv, "down", "--volumes", "--rmi", "--runtime", "docker",
                         cwd=root, timeout=180)
    assert down.returncode == 0, down.stderr[-2000:]
    resolved = load_config(root / "shop.yaml").infra.base_image  # the file has ${...}
    assert_nothing_left("docker", root, {**data, "infra": {**data["infra"],
                                                           "base_image": resolved}})
