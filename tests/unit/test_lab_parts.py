"""The lab's pure parts: names, fixed addresses, the node container's definition."""

from __future__ import annotations

import subprocess

import pytest

from shopctl.errors import UsageError
from shopctl.images.base import PYTHON_IMAGE, RECIPES, SWARM_NODE_IMAGE
from shopctl.lab import (
    ENGINE_PORT,
    LABEL_ADDRESS,
    LABEL_CONFIG,
    LABEL_INDEX,
    LABEL_LAB,
    NODE_SYSTEM_PATHS,
    Lab,
    LabNode,
    node_address,
    node_command,
    node_config_hash,
    node_host_config,
    node_labels,
    node_name,
    node_script,
    outdated,
    role_of,
    volume_name,
)
from shopctl.lab_registry import LabRegistry, registry_address


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
    script = node_script("10.1.0.0/24")
    assert "mount -o remount,bind,rw" in script
    assert script.index("rm -f /var/run/docker.pid") < script.index("exec dockerd")
    assert f"--host=tcp://0.0.0.0:{ENGINE_PORT}" in script and "--tls=false" in script
    # the lab's registry is on the lab network and speaks plain HTTP
    assert "--insecure-registry=10.1.0.0/24" in script
    assert node_command("10.1.0.0/24") == ["sh", "-c", script]
    subprocess.run(["sh", "-n", "-c", script], check=True)  # valid shell


def test_labels_name_the_lab_the_index_the_fixed_address_and_the_definition():
    labels = node_labels("lab", 3, "10.1.0.4", "10.1.0.0/24")
    assert labels == {LABEL_LAB: "lab", LABEL_INDEX: "3", LABEL_ADDRESS: "10.1.0.4",
                      LABEL_CONFIG: node_config_hash("lab", 3, "10.1.0.0/24")}
    assert not outdated(labels, "lab", 3, "10.1.0.0/24")
    # a node made by a version with other flags (or none of this label) is made again
    assert outdated({**labels, LABEL_CONFIG: "0" * 16}, "lab", 3, "10.1.0.0/24")
    assert outdated({LABEL_LAB: "lab", LABEL_INDEX: "3"}, "lab", 3, "10.1.0.0/24")
    assert node_config_hash("lab", 3, "10.2.0.0/24") != labels[LABEL_CONFIG]


def test_the_lab_registry_sits_at_the_subnets_last_host_and_says_where_to_push_and_pull():
    assert registry_address("172.21.0.0/16") == "172.21.255.254"
    assert registry_address("192.168.16.0/28") == "192.168.16.14"
    with pytest.raises(UsageError):
        registry_address("10.0.0.0/30")
    registry = LabRegistry("c9", "172.21.255.254", 5005, "running")
    assert registry.shop_yaml == {"push": "127.0.0.1:5005", "pull": "172.21.255.254:5000"}
    lab = Lab("l", "l", "172.21.0.0/16", (), registry)
    assert lab.to_dict()["registry"]["push"] == "127.0.0.1:5005"
    assert Lab("l", "l", "172.21.0.0/16", ()).to_dict()["registry"] is None


def test_the_registry_image_is_the_hosts_docker_registry_on_the_python_base():
    from shopctl.images.registry import REGISTRY_IMAGE

    recipe = RECIPES[REGISTRY_IMAGE]
    assert "COPY docker-registry" in recipe.inputs and "rootdirectory" in recipe.inputs
    assert repr(RECIPES[PYTHON_IMAGE].inputs) in recipe.inputs  # rebuilt when the base does


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
    assert data["registry"] is None
    down = Lab("l", "l", "10.1.0.0/24", (nodes[0], LabNode(
        "l-2", "c2", "10.1.0.3", "worker", "exited", "down")))
    assert not down.ready


def test_the_node_image_is_a_recipe_like_the_other_base_images():
    recipe = RECIPES[SWARM_NODE_IMAGE]
    for package in ("docker.io", "iptables", "fuse-overlayfs", "tini", "procps",
                    "ca-certificates"):
        assert package in recipe.inputs
    assert len(recipe.fingerprint) == 16
