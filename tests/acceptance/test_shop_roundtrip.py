"""The whole shop through the CLI, as a user drives it, on both runtimes:
up -> every service passing in Consul (asked over Consul's own HTTP API) -> status --json
healthy -> kill one service -> status critical -> up heals it -> a second up is a no-op
that touches nothing -> down --rmi leaves no container, network, process, Consul service
or (docker) image of the project, and keeps the base image.

Each test runs a copy of the project with its own project name and free ports, so it
never meets a shop already running on the machine.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import httpx
import pytest
import yaml

from shopctl.testing import consul_services, copy_demo_shop
from tests.acceptance.conftest import REPO, run_shopctl

# The demo shop's services, as its shop.yaml declares them.
SERVICES = tuple(yaml.safe_load((REPO / "shop.yaml").read_text())["services"])


def make_project(tmp_path: Path) -> tuple[Path, dict]:
    """A copy of the demo shop with a unique project name and free host ports."""
    return tmp_path, copy_demo_shop(REPO, tmp_path, prefix="t")


def shopctl_in(project: Path, *args: str, timeout: float = 600):
    return run_shopctl(*args, cwd=project, timeout=timeout)


def status_json(project: Path) -> tuple[int, dict]:
    result = shopctl_in(project, "status", "--json")
    return result.returncode, json.loads(result.stdout)


def wait_status(project: Path, predicate, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        code, data = status_json(project)
        rows = {row["name"]: row for row in data["services"]}
        if predicate(rows):
            return rows
        if time.monotonic() > deadline:
            raise AssertionError(f"status never matched; last: {json.dumps(rows, indent=1)}")
        time.sleep(1)


@pytest.fixture(params=["docker", "local"])
def project(request, tmp_path):
    root, data = make_project(tmp_path)
    runtime = request.param
    yield root, data, runtime
    shopctl_in(root, "down", "--volumes", "--rmi", "--runtime", runtime, timeout=180)


@pytest.mark.docker
@pytest.mark.consul
def test_round_trip(project):
    root, data, runtime = project
    name = data["project"]

    up = shopctl_in(root, "up", "--runtime", runtime)
    assert up.returncode == 0, up.stderr[-3000:]
    all_passing = dict.fromkeys(SERVICES, "passing")
    assert consul_services(data["infra"]["consul"]["port"], name, root) == all_passing

    code, status = status_json(root)
    assert code == 0
    assert {row["name"]: row["health"] for row in status["services"]} == all_passing
    assert all(row["state"] == "running" for row in status["services"])

    # A second up plans nothing and touches no instance.
    before = instances(runtime, root, data)
    again = shopctl_in(root, "up", "--json")
    assert again.returncode == 0, again.stderr[-2000:]
    assert {step["action"] for step in json.loads(again.stdout)["plan"]} == {"noop"}
    assert instances(runtime, root, data) == before

    stop_service(runtime, root, data, "payments")
    rows = wait_status(root, lambda r: r["payments"]["health"] == "critical")
    assert rows["payments"]["healthy"] is False
    assert shopctl_in(root, "status").returncode == 1

    heal = shopctl_in(root, "up")
    assert heal.returncode == 0, heal.stderr[-3000:]
    plan_after = shopctl_in(root, "up", "--dry-run", "--json")
    assert {step["action"] for step in json.loads(plan_after.stdout)["plan"]} == {"noop"}
    code, status = status_json(root)
    assert code == 0, status

    if runtime == "docker":
        assert len(project_images(name)) == len(SERVICES)  # so "none left" means something
    down = shopctl_in(root, "down", "--rmi")  # a no-op for images on the local runtime
    assert down.returncode == 0, down.stderr[-2000:]
    assert_nothing_left(runtime, root, data)


def instances(runtime: str, root: Path, data: dict) -> dict[str, tuple]:
    """{service: (instance id, start time)} read past shopctl, from the runtime itself."""
    if runtime == "docker":
        import docker

        client = docker.from_env()
        out = {}
        for svc in SERVICES:
            c = client.containers.get(f"shopctl-{data['project']}-{svc}")
            out[svc] = (c.id, c.attrs["State"]["StartedAt"])
        return out
    runs = root / ".shopctl" / "local" / "run"
    records = {svc: json.loads((runs / f"{svc}.json").read_text()) for svc in SERVICES}
    return {svc: (r["child_pid"], r["started_at"]) for svc, r in records.items()}


def stop_service(runtime: str, root: Path, data: dict, service: str) -> None:
    """Kill a service the way a crash or an operator would, bypassing shopctl."""
    if runtime == "docker":
        import docker

        docker.from_env().containers.get(f"shopctl-{data['project']}-{service}").kill()
        return
    run = json.loads((root / ".shopctl" / "local" / "run" / f"{service}.json").read_text())
    os.kill(run["supervisor_pid"], signal.SIGKILL)


def project_images(project: str) -> list[str]:
    """Tags (or ids) of the images of `project`, found by its label and by its repository
    name, so an image that lost either is still seen."""
    import docker

    client = docker.from_env()
    found = client.images.list(filters={"label": f"io.shopctl.project={project}"})
    found += client.images.list(filters={"reference": f"shopctl-{project}/*"})
    return sorted({tag for image in found for tag in image.tags or [image.id]})


def assert_nothing_left(runtime: str, root: Path, data: dict) -> None:
    name = data["project"]
    if runtime == "docker":
        import docker

        client = docker.from_env()
        label = f"io.shopctl.project={name}"
        assert client.containers.list(all=True, filters={"label": label}) == []
        assert client.networks.list(filters={"label": label}) == []
        assert project_images(name) == []
        client.images.get(data["infra"]["base_image"])  # the base image stays
    else:
        from shopctl.runtime.local import marked_pids
        from shopctl.state import ProjectState

        assert marked_pids(ProjectState(root).dir) == []
    # Consul went away with the project, so nothing can still be registered in it.
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{data['infra']['consul']['port']}/v1/agent/self", timeout=2)
