"""The lab's registry: a real Docker registry (Debian's docker-registry 2.8, in the
shopctl/registry image) for the swarm runtime's registry mode (infra.swarm.registry).

Contract of `ensure_registry(client, lab, subnet, port, progress)`: the container
`<lab>-registry` runs on the lab network at the subnet's last host address and answers
on 127.0.0.1:`port` of this machine (default: the port it has, else 5000); its storage is
the volume `<lab>-registry-data`, so images pushed stay across `lab up`s. Idempotent: a
running registry with the same definition is reused, a stopped one started, one made
otherwise (another port, an older image) made again on its volume. Both carry the lab's
label, so `lab down` removes them. `observe_registry(client, lab)` is the registry as it
is, or None.

The host engine pushes to 127.0.0.1:PORT (docker allows plain HTTP to loopback); the
nodes pull from ADDRESS:5000, which their dockerd accepts without TLS because the lab's
subnet is an insecure registry to them (shopctl.lab.node_script).
"""

from __future__ import annotations

import ipaddress
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from shopctl.errors import LabError, UsageError
from shopctl.units import Progress

if TYPE_CHECKING:
    import docker

LABEL_PART = "io.shopctl.lab.part"  # "registry" on its container and volume
REGISTRY_PORT = 5000  # the registry's, in its container and by default on loopback
READY_TIMEOUT = 30.0  # s for the registry to answer on loopback


@dataclass(frozen=True)
class LabRegistry:
    """The lab's registry as it is: one container of the host engine on the lab
    network. The host pushes to it on loopback, which the engine allows without TLS; the
    nodes pull from its address on the lab network, which their engines take as an
    insecure registry (shopctl.lab.node_script)."""

    container: str
    address: str  # on the lab network
    port: int  # published on the host's 127.0.0.1
    state: str

    @property
    def push(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pull(self) -> str:
        return f"{self.address}:{REGISTRY_PORT}"

    @property
    def shop_yaml(self) -> dict[str, str]:
        """What infra.swarm.registry says to use it."""
        return {"push": self.push, "pull": self.pull}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"push": self.push, "pull": self.pull}


def registry_name(lab: str) -> str:
    return f"{lab}-registry"


def registry_volume(lab: str) -> str:
    return f"{lab}-registry-data"


def registry_address(subnet: str) -> str:
    """The subnet's last host address: the nodes take the first ones after the gateway."""
    network = ipaddress.ip_network(subnet)
    if network.num_addresses < 8:
        raise UsageError(f"subnet {subnet} is too small for the lab's registry")
    return str(network.broadcast_address - 1)


def registry_config_hash(image_id: str, address: str, port: int) -> str:
    from shopctl.fingerprint import data_hash

    return data_hash({"image": image_id, "address": address, "port": port})[:16]


def ensure_registry(client: docker.DockerClient, lab: str, subnet: str, port: int | None,
                    progress: Progress, labels: dict[str, str], config_label: str,
                    ) -> LabRegistry:
    """See the module's contract; `labels` are the lab's (on everything of it),
    `config_label` the label holding a container's definition hash."""
    import docker.errors

    from shopctl.docker_client import docker_errors
    from shopctl.images.base import ensure_image
    from shopctl.images.registry import REGISTRY_IMAGE

    name = registry_name(lab)
    address = registry_address(subnet)
    image = ensure_image(client, REGISTRY_IMAGE, progress).image_id
    with docker_errors(f"starting the registry of lab {lab}"):
        try:
            container = client.containers.get(name)
        except docker.errors.NotFound:
            container = None
        if port is None:
            port = _published_port(container) or REGISTRY_PORT
        wanted = registry_config_hash(image, address, port)
        if container is not None and container.labels.get(config_label) != wanted:
            progress(name, "making it again (its definition changed; its images stay)")
            container.remove(force=True)
            container = None
        if container is None:
            progress(name, f"creating (127.0.0.1:{port}, {address}:{REGISTRY_PORT})")
            labels = {**labels, LABEL_PART: "registry"}
            client.volumes.create(registry_volume(lab), labels=labels)
            api = client.api
            created = api.create_container(
                image, name=name, hostname=name, labels={**labels, config_label: wanted},
                ports=[REGISTRY_PORT],
                host_config=api.create_host_config(
                    port_bindings={REGISTRY_PORT: ("127.0.0.1", port)},
                    binds={registry_volume(lab): {"bind": "/var/lib/registry", "mode": "rw"}},
                    restart_policy={"Name": "unless-stopped"}),
                networking_config=api.create_networking_config(
                    {lab: api.create_endpoint_config(ipv4_address=address)}))
            container = client.containers.get(created["Id"])
        if container.status != "running":
            progress(name, "starting")
            container.start()
    _wait_answers(container, port)
    progress(name, f"ready: push to 127.0.0.1:{port}, nodes pull from "
                   f"{address}:{REGISTRY_PORT}")
    return LabRegistry(container.id, address, port, "running")


def observe_registry(client: docker.DockerClient, lab: str,
                     labels: dict[str, str]) -> LabRegistry | None:
    selector = [f"{key}={value}" for key, value in labels.items()]
    found = client.containers.list(all=True, filters={
        "label": [*selector, f"{LABEL_PART}=registry"]})
    if not found:
        return None
    container = found[0]
    networks = (container.attrs.get("NetworkSettings") or {}).get("Networks") or {}
    config = ((networks.get(lab) or {}).get("IPAMConfig") or {})
    address = config.get("IPv4Address") or (networks.get(lab) or {}).get("IPAddress", "")
    return LabRegistry(container.id, address, _published_port(container) or 0,
                       container.status)


def _published_port(container) -> int | None:
    if container is None:
        return None
    bindings = (container.attrs.get("HostConfig") or {}).get("PortBindings") or {}
    for binding in bindings.get(f"{REGISTRY_PORT}/tcp") or []:
        if binding.get("HostPort"):
            return int(binding["HostPort"])
    return None


def _wait_answers(container, port: int) -> None:
    """Until GET /v2/ on loopback answers 200 (the registry's API version check)."""
    from shopctl.docker_client import log_tail
    from shopctl.readiness import http_ok

    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        if http_ok(port, "/v2/"):
            return
        container.reload()
        if container.status not in ("running", "created", "restarting") \
                or time.monotonic() > deadline:
            raise LabError(f"the lab's registry does not answer on 127.0.0.1:{port} "
                           f"({container.status})", hint=log_tail(container))
        time.sleep(0.2)
