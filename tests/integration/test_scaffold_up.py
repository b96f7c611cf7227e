"""Issue 6, last acceptance step: for each kind, in a copy of the project with its own
name and free ports, `scaffold new-service` -> `up NAME --runtime docker` brings it up
passing in Consul (asked over Consul's own HTTP API) -> `down --volumes --rmi` leaves no
container and no image of the project."""

from __future__ import annotations

import shutil

import httpx
import pytest

from shopctl.testing import consul_headers, free_ports
from tests.acceptance.conftest import REPO
from tests.acceptance.test_shop_roundtrip import make_project, project_images, shopctl_in

KINDS = ["flask", "fastapi", "nameko", "grpc"]


@pytest.fixture
def project(tmp_path):
    root, data = make_project(tmp_path)
    shutil.copytree(REPO / "templates", root / "templates",
                    ignore=shutil.ignore_patterns("__pycache__"))
    yield root, data
    shopctl_in(root, "down", "--volumes", "--rmi", "--runtime", "docker", timeout=180)


def project_containers(project_name: str) -> list:
    import docker

    client = docker.from_env()
    return client.containers.list(all=True, filters={"label": f"io.shopctl.project={project_name}"})


@pytest.mark.docker
@pytest.mark.consul
@pytest.mark.parametrize("kind", KINDS)
def test_scaffolded_service_comes_up_healthy_in_consul(project, kind):
    root, data = project
    name = f"new-{kind}"
    (port,) = free_ports(1)

    made = shopctl_in(root, "scaffold", "new-service", name, "--kind", kind, "--port", str(port))
    assert made.returncode == 0, made.stderr

    up = shopctl_in(root, "up", name, "--runtime", "docker")
    assert up.returncode == 0, up.stdout[-2000:] + up.stderr[-3000:]

    consul = f"http://127.0.0.1:{data['infra']['consul']['port']}"
    entries = httpx.get(f"{consul}/v1/health/service/{name}", headers=consul_headers(root),
                        timeout=5).json()
    entries = [e for e in entries if e["Service"].get("Meta", {}).get("project") == data["project"]]
    assert entries, f"{name} is not registered in Consul"
    for entry in entries:
        statuses = {check["Status"] for check in entry["Checks"]}
        assert statuses == {"passing"}, entry["Checks"]

    down = shopctl_in(root, "down", "--volumes", "--rmi", timeout=180)
    assert down.returncode == 0, down.stderr[-2000:]
    assert project_containers(data["project"]) == []
    assert project_images(data["project"]) == []
