"""Images onto the swarm's nodes without a registry: `docker save` from the engine that
built them, `docker load` into each node that lacks that exact image (by id; a node
that has it is skipped, and layers it has are not written again by the engine).

Each node's engine is reached at its swarm address on infra.swarm.node_port (the lab's
nodes listen there without TLS). Services name a loaded image by its id, which no node
looks up in a registry (shopctl.swarm.images).
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import docker
import docker.errors

from shopctl.docker_client import LONG_TIMEOUT, docker_errors
from shopctl.errors import RuntimeUnavailable
from shopctl.units import Progress, no_progress


@dataclass(frozen=True)
class Node:
    id: str
    hostname: str
    address: str
    role: str  # manager | worker
    ready: bool


def nodes(manager: docker.DockerClient) -> list[Node]:
    with docker_errors("listing the swarm's nodes"):
        found = manager.api.nodes()
    out = []
    for node in found:
        status = node.get("Status") or {}
        address = status.get("Addr") or ""
        if address in ("", "0.0.0.0"):
            address = ((node.get("ManagerStatus") or {}).get("Addr") or "").rpartition(":")[0]
        out.append(Node(node["ID"], (node.get("Description") or {}).get("Hostname", ""),
                        address, (node.get("Spec") or {}).get("Role", "worker"),
                        status.get("State") == "ready"))
    return sorted(out, key=lambda n: (n.role != "manager", n.hostname))


def engine(node: Node, port: int) -> docker.DockerClient:
    try:
        return docker.DockerClient(base_url=f"tcp://{node.address}:{port}",
                                   timeout=LONG_TIMEOUT)
    except docker.errors.DockerException as exc:
        raise RuntimeUnavailable(f"node {node.hostname}'s engine at {node.address}:{port}: "
                                 f"{exc}", hint="set infra.swarm.node_port") from None


def distribute(builder: docker.DockerClient, images: Iterable[str], targets: list[Node],
               port: int, progress: Progress = no_progress) -> dict[str, list[str]]:
    """Load each image into every target node lacking it; {node: images loaded}."""
    wanted = {}
    for tag in dict.fromkeys(images):
        with docker_errors(f"looking up image {tag}"):
            wanted[tag] = builder.images.get(tag).id

    def one(node: Node) -> tuple[str, list[str]]:
        client = engine(node, port)
        loaded = []
        try:
            for tag, image_id in wanted.items():
                if _has(client, tag, image_id):
                    continue
                progress(node.hostname, f"loading image {tag}")
                with docker_errors(f"loading {tag} into node {node.hostname}"):
                    client.api.load_image(builder.api.get_image(tag))
                loaded.append(tag)
        finally:
            client.close()
        return node.hostname, loaded

    ready = [node for node in targets if node.ready]
    with ThreadPoolExecutor(max_workers=max(1, len(ready))) as pool:
        return dict(pool.map(one, ready))


def _has(client: Any, tag: str, image_id: str) -> bool:
    try:
        return client.images.get(tag).id == image_id
    except docker.errors.ImageNotFound:
        return False
