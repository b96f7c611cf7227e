"""The lab's pure parts: names, fixed addresses, the node container's definition."""

from __future__ import annotations

import subprocess

import pytest

from shopctl.errors import UsageError
from shopctl.images.base import RECIPES, SWARM_NODE_IMAGE
from shopctl.lab import (
    ENGINE_PORT,
    LABEL_ADDRESS,
    LABEL_INDEX,
    LABEL_LAB,
    NODE_SYSTEM_PATHS,
    Lab,
    LabNode,
    node_address,
    node_command,
    node_host_config,
    node_labels,
    node_name,
    node_script,
    role_of,
    volume_name,
)


def test_nodes_are_named_after_the_lab_with_a_volume_each_and_node_1_manages():
    assert [node_name("shopctl-lab", i) for i in (1, 2, 3)] == [
        "shopctl-lab-1", "shopctl-lab-2", "shopctl-lab-3"]
    assert volume_name("shopctl-lab", 2) == "shopctl-lab-2-docker"
    assert [role_of(i) for i in (1, 2, 3)] == ["manager", "worker", "worker"]


def test_node_addresses_follow_the_gateway_and_never_leave_the_subnet():
    assert node_address("172.23.0.0/16", 1) == "172.23.0.2"
    assert node_address("172.23.0.0/16", 3) == "172.23.0.4"
    assert node_address("192.168.16.0/28", 13) == "192.168.16.14"
    with pytest.raises(UsageError, match="no room for node 14"):
        node_address("192.168.16.0/28", 14)  # .15 is the broadcast address


def test_a_node_runs_without_privileged_with_every_capability_but_sys_resource():
    config = node_host_config("shopctl-lab", 2)
    assert "privileged" not in config
    assert config["cap_add"] == ["ALL"] and config["cap_drop"] == ["SYS_RESOURCE"]
    assert set(config["security_opt"]) == {"seccomp=unconfined", "apparmor=unconfined"}
    assert NODE_SYSTEM_PATHS == {"MaskedPaths": [], "ReadonlyPaths": []}  # systempaths=...
    assert config["device_cgroup_rules"] == ["a *:* rwm"]
    assert config["devices"] == ["/dev/fuse:/dev/fuse:rwm"]
    assert config["binds"] == {"shopctl-lab-2-docker": {"bind": "/var/lib/docker", "mode": "rw"}}


def test_the_node_script_remounts_cgroups_rw_drops_stale_pids_and_serves_tcp_without_tls():
    script = node_script()
    assert "mount -o remount,bind,rw" in script
    assert script.index("rm -f /var/run/docker.pid") < script.index("exec dockerd")
    assert f"--host=tcp://0.0.0.0:{ENGINE_PORT}" in script and "--tls=false" in script
    assert node_command() == ["sh", "-c", script]
    subprocess.run(["sh", "-n", "-c", script], check=True)  # valid shell


def test_labels_name_the_lab_the_index_and_the_fixed_address():
    assert node_labels("lab", 3, "10.1.0.4") == {
        LABEL_LAB: "lab", LABEL_INDEX: "3", LABEL_ADDRESS: "10.1.0.4"}


def test_a_lab_is_ready_only_when_every_node_runs_and_is_ready_and_says_its_docker_host():
    nodes = (LabNode("l-1", "c1", "10.1.0.2", "manager", "running", "ready"),
             LabNode("l-2", "c2", "10.1.0.3", "worker", "running", "ready"))
    lab = Lab("l", "l", "10.1.0.0/24", nodes)
    assert lab.ready and lab.manager_host == "tcp://10.1.0.2:2375"
    data = lab.to_dict()
    assert data["manager_host"] == "tcp://10.1.0.2:2375" and data["ready"] is True
    assert data["nodes"][1] == {"name": "l-2", "container": "c2", "address": "10.1.0.3",
                                "role": "worker", "state": "running", "swarm": "ready",
                                "docker_host": "tcp://10.1.0.3:2375"}
    down = Lab("l", "l", "10.1.0.0/24", (nodes[0], LabNode(
        "l-2", "c2", "10.1.0.3", "worker", "exited", "down")))
    assert not down.ready


def test_the_node_image_is_a_recipe_like_the_other_base_images():
    recipe = RECIPES[SWARM_NODE_IMAGE]
    for package in ("docker.io", "iptables", "fuse-overlayfs", "tini", "procps",
                    "ca-certificates"):
        assert package in recipe.inputs
    assert len(recipe.fingerprint) == 16
