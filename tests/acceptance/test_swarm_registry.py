"""The swarm runtime's registry mode on the real lab (issue 16, item 2), through the CLI:

- `up --runtime swarm` with infra.swarm.registry set to the lab's registry (Debian's
  docker-registry 2.8 in a container, `lab up --registry`) pushes every image the shop
  runs there and names it by digest: each service's spec and each running task's
  container is REPO:TAG@sha256:... from the registry, the digest the registry serves for
  that tag, and no node holds the image under the name the host built it as (nothing
  was loaded into the nodes);
- a code edit, then `up`, pushes a new digest and rolls that service onto it;
- a registry that does not answer fails `up` in words, without a traceback;
- `down` removes the services.

Kept small for CI: one service (the demo's users, 2 replicas), Consul, no RabbitMQ.
"""

from __future__ import annotations

import json
import re
import time

import docker
import docker.errors
import httpx
import pytest
import yaml

from shopctl.testing import free_ports
from tests.acceptance.test_shop_roundtrip import make_project, shopctl_in

pytestmark = [pytest.mark.docker]

SERVICE = "users"
MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


@pytest.fixture(scope="module")
def registry_lab(swarm_lab):
    """The lab with its registry (made, or reused as it is)."""
    from shopctl.lab import lab_up

    started = time.monotonic()
    lab = lab_up(nodes=len(swarm_lab.nodes), name=swarm_lab.name, registry=True)
    print(f"\nlab with its registry: {time.monotonic() - started:.1f}s")
    assert lab.registry is not None and lab.registry.state == "running"
    return lab


def tiny_shop(folder, lab, registry) -> tuple:
    """The demo's users alone (2 replicas), Consul, no RabbitMQ, on the lab's swarm."""
    root, data = make_project(folder)
    data["services"] = {SERVICE: {**data["services"][SERVICE], "replicas": 2}}
    data.pop("sagas", None)
    data["infra"]["rabbitmq"]["enabled"] = False
    data["infra"]["swarm"] = {"host": lab.manager_host, "registry": registry}
    (root / "shop.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return root, data


@pytest.fixture(scope="module")
def shop(registry_lab, tmp_path_factory):
    lab = registry_lab
    root, data = tiny_shop(tmp_path_factory.mktemp("swreg"), lab, lab.registry.shop_yaml)
    started = time.monotonic()
    try:
        up = shopctl_in(root, "up", "--runtime", "swarm", "--json", timeout=600)
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-4000:]
        print(f"\nup --runtime swarm with a registry (pushes, pulls, 2 replicas passing): "
              f"{time.monotonic() - started:.1f}s")
        yield root, data, lab
    finally:
        down = shopctl_in(root, "down", "--volumes", "--rmi", timeout=300)
        print(down.stdout[-1000:], down.stderr[-2000:])


def project_services(lab, project: str) -> dict[str, dict]:
    manager = docker.DockerClient(base_url=lab.manager_host)
    return {s.attrs["Spec"]["Labels"]["io.shopctl.service"]: s.attrs
            for s in manager.services.list(filters={"label": f"io.shopctl.project={project}"})}


def registry_digest(lab, path: str, tag: str) -> str:
    """The digest the lab's registry serves for PATH:TAG (asked on loopback)."""
    answer = httpx.head(f"http://{lab.registry.push}/v2/{path}/manifests/{tag}",
                        headers={"Accept": MANIFEST}, timeout=5)
    assert answer.status_code == 200, (path, tag, answer.status_code)
    return answer.headers["Docker-Content-Digest"]


def pinned_parts(lab, image: str) -> tuple[str, str, str]:
    """(path, tag, digest) of PULL/PATH:TAG@DIGEST, checked to name the lab's registry."""
    found = re.fullmatch(re.escape(lab.registry.pull) + r"/(.+):([^:/@]+)@(sha256:[0-9a-f]{64})",
                         image)
    assert found, image
    return found[1], found[2], found[3]


def running_containers(lab, service: dict) -> list[tuple[str, dict]]:
    """(node address, container inspect) of each running task of a service."""
    manager = docker.DockerClient(base_url=lab.manager_host)
    nodes = {n.id: n.attrs["Status"]["Addr"] for n in manager.nodes.list()}
    out = []
    for task in manager.api.tasks(filters={"service": service["ID"],
                                           "desired-state": "running"}):
        if task["Status"]["State"] != "running":
            continue
        engine = docker.DockerClient(base_url=f"tcp://{nodes[task['NodeID']]}:2375")
        container = engine.api.inspect_container(
            task["Status"]["ContainerStatus"]["ContainerID"])
        out.append((nodes[task["NodeID"]], container))
    return out


def check_pinned(lab, service: dict) -> str:
    """The service runs exactly the registry's image for its tag, on every task; returns
    that pinned reference."""
    image = service["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]
    path, tag, digest = pinned_parts(lab, image)
    assert registry_digest(lab, path, tag) == digest
    containers = running_containers(lab, service)
    assert containers, service["Spec"]["Name"]
    for address, container in containers:
        assert container["Config"]["Image"] == image, address
        node = docker.DockerClient(base_url=f"tcp://{address}:2375")
        digests = node.api.inspect_image(container["Image"])["RepoDigests"]
        assert f"{lab.registry.pull}/{path}@{digest}" in digests, (address, digests)
    return image


def test_every_service_runs_an_image_pinned_by_digest_from_the_registry(shop):
    root, data, lab = shop
    services = project_services(lab, data["project"])
    assert set(services) == {"consul", "registrar", SERVICE}
    images = {name: check_pinned(lab, svc) for name, svc in services.items()}
    # Nothing was loaded into the nodes: none has the service image under the name the
    # host built it as (only the registry's, by digest).
    path, tag, _ = pinned_parts(lab, images[SERVICE])
    host_name = f"{path}:{tag}"
    docker.from_env().images.get(host_name)  # the host has it
    for node in lab.nodes:
        engine = docker.DockerClient(base_url=node.docker_host)
        with pytest.raises(docker.errors.ImageNotFound):
            engine.images.get(host_name)
    status = json.loads(shopctl_in(root, "status", "--json").stdout)
    assert status["images"] == {"mode": "registry", "push": lab.registry.push,
                                "pull": lab.registry.pull, "prefix": ""}
    assert {row["image"] for row in status["services"]} == {images[SERVICE]}
    assert {row["health"] for row in status["services"]} == {"passing"}


def test_an_edit_then_up_pushes_a_new_digest_and_rolls_the_service_onto_it(shop):
    root, data, lab = shop
    before = project_services(lab, data["project"])[SERVICE]
    old = before["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]
    source = root / "services" / SERVICE / "app.py"
    source.write_text(source.read_text() + "\n# a change that makes a new image\n")
    started = time.monotonic()
    up = shopctl_in(root, "up", "--json", timeout=600)
    seconds = time.monotonic() - started
    assert up.returncode == 0, up.stdout[-2000:] + up.stderr[-3000:]
    plan = {(s["instance"], s["action"]) for s in json.loads(up.stdout)["plan"]}
    assert {a for (i, a) in plan if i.split(".")[0] == SERVICE} == {"recreate"}
    print(f"\nedit, then up: build, push and rolling update of {SERVICE} (2 replicas) "
          f"{seconds:.1f}s")
    after = project_services(lab, data["project"])[SERVICE]
    new = check_pinned(lab, after)
    old_path, old_tag, old_digest = pinned_parts(lab, old)
    new_path, new_tag, new_digest = pinned_parts(lab, new)
    assert new_path == old_path and new_tag != old_tag and new_digest != old_digest
    assert registry_digest(lab, old_path, old_tag) == old_digest  # the old one stays there
    assert after["Version"]["Index"] > before["Version"]["Index"]


def test_a_registry_that_does_not_answer_fails_up_in_words(registry_lab, tmp_path):
    [port] = free_ports(1)
    root, _ = tiny_shop(tmp_path, registry_lab, f"127.0.0.1:{port}")
    up = shopctl_in(root, "up", "--runtime", "swarm", timeout=300)
    assert up.returncode != 0
    assert f"the registry at 127.0.0.1:{port} does not answer" in up.stderr, up.stderr
    assert "lab up --registry" in up.stderr and "Traceback" not in up.stderr
    shopctl_in(root, "down", timeout=120)


def test_down_removes_the_services_and_with_rmi_the_images_this_host_built(shop):
    root, data, lab = shop
    host = docker.from_env()
    label = {"label": f"io.shopctl.project={data['project']}"}
    tags = {tag for image in host.images.list(filters=label) for tag in image.tags}
    ours = f"shopctl-{data['project']}/"
    assert any(tag.startswith(ours) for tag in tags), tags
    assert any(f"/{ours}" in tag for tag in tags), tags  # as the registry names it
    down = shopctl_in(root, "down", "--rmi", timeout=300)
    assert down.returncode == 0, down.stderr[-2000:]
    assert project_services(lab, data["project"]) == {}
    assert host.images.list(filters=label) == []  # its own and the registry-named tags
