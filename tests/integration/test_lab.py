"""The lab for real: docker-in-docker nodes on the host engine forming one swarm, images
loaded onto them without a registry, and nothing left behind by `down`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid

import docker
import docker.types
import pytest

from shopctl.docker_client import connect
from shopctl.errors import UsageError
from shopctl.images.base import PYTHON_IMAGE, ensure_image
from shopctl.lab import LABEL_LAB, lab_down, lab_status, lab_up, load_images
from shopctl.testing import wait_for

pytestmark = pytest.mark.docker


def engine(host: str) -> docker.DockerClient:
    return docker.DockerClient(base_url=host, timeout=60)


def test_lab_up_makes_three_nodes_ready_in_one_swarm_managed_by_node_1(lab):
    listed = engine(lab.manager_host).nodes.list()
    assert sorted(n.attrs["Description"]["Hostname"] for n in listed) == [
        node.name for node in lab.nodes]
    assert all(n.attrs["Status"]["State"] == "ready" for n in listed)
    roles = {n.attrs["Description"]["Hostname"]: n.attrs["Spec"]["Role"] for n in listed}
    assert roles == {node.name: node.role for node in lab.nodes}
    assert lab.ready and len(lab.nodes) >= 3
    for node in lab.nodes:  # each node is an engine of its own, a member of that swarm
        swarm = engine(node.docker_host).info()["Swarm"]
        assert swarm["LocalNodeState"] == "active"
        assert swarm["NodeID"] in {n.id for n in listed}


def test_a_second_lab_up_reuses_the_running_nodes_quickly(lab):
    started = time.monotonic()
    again = lab_up(nodes=len(lab.nodes), name=lab.name)
    took = time.monotonic() - started
    assert [n.container for n in again.nodes] == [n.container for n in lab.nodes]
    assert again.ready and again.manager_host == lab.manager_host
    assert took < 10, f"a lab up with every node running took {took:.1f}s"
    with pytest.raises(UsageError, match="lab down"):
        lab_up(nodes=len(lab.nodes) - 1, name=lab.name)  # never shrunk behind one's back


def test_the_cli_says_the_managers_docker_host(lab):
    out = subprocess.run([sys.executable, "-m", "shopctl", "lab", "up", "--json"],
                         capture_output=True, text=True, check=True, env=os.environ)
    data = json.loads(out.stdout)
    assert data["manager_host"] == lab.manager_host and data["ready"] is True
    status = subprocess.run([sys.executable, "-m", "shopctl", "lab", "status"],
                            capture_output=True, text=True)
    assert status.returncode == 0, status.stdout + status.stderr
    for node in lab.nodes:
        assert node.name in status.stdout


def test_loaded_images_run_a_dnsrr_service_with_one_task_on_every_node(lab):
    image_id = ensure_image(connect(), PYTHON_IMAGE).image_id
    load_images(lab, [PYTHON_IMAGE])
    for node in lab.nodes:
        assert engine(node.docker_host).images.get(PYTHON_IMAGE).id == image_id
    again = load_images(lab, [PYTHON_IMAGE])  # every node has it now: nothing is copied
    assert {item.action for item in again} == {"present"}

    manager = engine(lab.manager_host)
    service = manager.services.create(
        PYTHON_IMAGE, ["python3", "-c", "import time; time.sleep(3600)"],
        name=f"labtest-{uuid.uuid4().hex[:8]}",
        mode=docker.types.ServiceMode("replicated", replicas=len(lab.nodes)),
        endpoint_spec=docker.types.EndpointSpec(mode="dnsrr"),
        # One task a node, so every node shows it can run the loaded image.
        maxreplicas=1,
    )
    try:
        def running_nodes():
            tasks = service.tasks(filters={"desired-state": "running"})
            nodes = {t["NodeID"] for t in tasks if t["Status"]["State"] == "running"}
            return nodes if len(nodes) == len(lab.nodes) else None

        nodes = wait_for(running_nodes, 60, "a running task on every node", interval=0.5)
        assert nodes == {n.id for n in manager.nodes.list()}
    finally:
        service.remove()


def test_a_stopped_lab_comes_back_with_its_swarm_and_down_leaves_nothing():
    name = f"shopctl-labtest-{uuid.uuid4().hex[:6]}"
    host = connect()
    try:
        first = lab_up(nodes=2, name=name)
        assert first.ready
        for node in first.nodes:
            host.containers.get(node.container).stop(timeout=10)
        assert not lab_status(name).ready
        back = lab_up(nodes=2, name=name)  # restarted, not recreated; stale pid files gone
        assert [n.container for n in back.nodes] == [n.container for n in first.nodes]
        assert back.ready
        assert len(engine(back.manager_host).nodes.list()) == 2  # same members, no stale ones
    finally:
        removed = lab_down(name)
    assert removed
    selector = {"label": f"{LABEL_LAB}={name}"}
    assert host.containers.list(all=True, filters=selector) == []
    assert host.volumes.list(filters=selector) == []
    assert host.networks.list(filters=selector) == []
    assert lab_status(name) is None
    assert lab_down(name) is False  # a second down finds nothing and says so
