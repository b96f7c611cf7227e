"""A local multi-node Docker Swarm to run and test against: the lab.

Each node is a container of the host engine running its own dockerd (docker-in-docker,
image shopctl/swarm-node, built from Debian packages like the other base images), so the
host engine's own swarm state is never touched. Node 1 is the swarm's manager, the others
join it as workers. Images reach the nodes in one of two ways: copied onto them with
`load_images` (docker save on the host, docker load on each node), the mode without a
registry; or through the lab's registry (`lab_up(registry=True)`, shopctl.lab_registry),
which every node's engine trusts without TLS (node_script).

Contract:
- `lab_up(nodes, name, progress)` makes the lab `name` exist with `nodes` nodes, all
  Ready in one swarm, and returns it. It is idempotent: running nodes are reused as they
  are (same containers), stopped ones restarted (their swarm membership is kept on their
  volume), missing ones (and the node image) built; a node made with other engine flags
  than this version's (a label holds their hash) is made again on its volume, keeping
  its images and swarm membership. Asking for fewer nodes than the lab has is refused
  (`lab_down` first). With `registry`, the lab's registry runs too; without, one that
  exists is left as it is. Calls for one name are serialised across processes.
- `lab_status(name)` is the lab as it is now, or None when nothing of it exists.
- `lab_down(name, progress)` removes the nodes, the registry, their volumes and the
  network: nothing labelled `io.shopctl.lab=<name>` is left. A no-op when there is no
  such lab.
- `load_images(lab, images, progress)` puts each host image on every running node under
  the same name and id; a node that has that id already is skipped.
Errors are ShopctlErrors: RuntimeUnavailable without a host engine (or debootstrap/root to
build the node image), LabError for a node that does not come up (with its log's tail), a
swarm that does not form, or an image the host does not have.

The nodes are reached at their addresses on the lab's bridge network, so the host engine
must run on this machine (DOCKER_HOST a local socket).
"""

from __future__ import annotations

import ipaddress
import os
import shlex
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

from shopctl.errors import LabError, UsageError
from shopctl.lab_registry import LabRegistry
from shopctl.units import Progress, no_progress

if TYPE_CHECKING:
    import docker

DEFAULT_NAME = "shopctl-lab"
DEFAULT_NODES = 3
ENGINE_PORT = 2375  # each node's dockerd, plain TCP: the lab network is private to the host
SWARM_PORT = 2377
NODE_API_VERSION = "1.41"  # docker 20.10's, the nodes' engine

LABEL_LAB = "io.shopctl.lab"  # on every container, volume and network: the lab's name
LABEL_INDEX = "io.shopctl.lab.node"  # 1-based position; node 1 is the manager
LABEL_ADDRESS = "io.shopctl.lab.address"  # fixed address on the lab network
LABEL_CONFIG = "io.shopctl.lab.config"  # hash of the node container's definition

ENGINE_TIMEOUT = 60.0  # s for a node's dockerd to answer (4-6 s measured for three)
READY_TIMEOUT = 60.0  # s for every node to be Ready in the manager's node list

Role = Literal["manager", "worker"]


@dataclass(frozen=True)
class LabNode:
    name: str  # container name and hostname, also the swarm node's hostname
    container: str  # container id ("" in a plan for a node not created yet)
    address: str  # IPv4 address on the lab network, fixed for the node's life
    role: Role
    state: str  # the container's: running, exited, created...
    swarm: str = "unknown"  # as the manager sees it: ready, down, unknown, or absent

    @property
    def docker_host(self) -> str:
        return f"tcp://{self.address}:{ENGINE_PORT}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"docker_host": self.docker_host}


@dataclass(frozen=True)
class Lab:
    name: str
    network: str
    subnet: str
    nodes: tuple[LabNode, ...]
    registry: LabRegistry | None = None  # the lab's registry, when it has one

    @property
    def manager(self) -> LabNode | None:
        return next((n for n in self.nodes if n.role == "manager"), None)

    @property
    def manager_host(self) -> str:
        """DOCKER_HOST for the swarm's manager, where services are created ("" when a
        half-removed lab has none)."""
        return self.manager.docker_host if self.manager else ""

    @property
    def ready(self) -> bool:
        return bool(self.nodes) and all(
            n.state == "running" and n.swarm == "ready" for n in self.nodes)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "network": self.network, "subnet": self.subnet,
                "manager_host": self.manager_host, "ready": self.ready,
                "nodes": [n.to_dict() for n in self.nodes],
                "registry": self.registry.to_dict() if self.registry else None}


@dataclass(frozen=True)
class LoadedImage:
    node: str
    image: str
    action: Literal["present", "loaded"]
    seconds: float


# ---- pure parts: names, addresses, the node container's definition ----------------------

def node_name(lab: str, index: int) -> str:
    return f"{lab}-{index}"


def volume_name(lab: str, index: int) -> str:
    """The node's /var/lib/docker: images, containers and swarm state survive a restart."""
    return f"{node_name(lab, index)}-docker"


def role_of(index: int) -> Role:
    return "manager" if index == 1 else "worker"


def node_address(subnet: str, index: int) -> str:
    """Node `index` (1-based) gets the subnet's host index+1: host 1 is the gateway."""
    network = ipaddress.ip_network(subnet)
    address = network.network_address + 1 + index
    if address not in network or address == network.broadcast_address:
        raise UsageError(f"subnet {subnet} has no room for node {index}")
    return str(address)


def node_script(subnet: str) -> str:
    """The node's start-up, as `sh -c`. Without --privileged the cgroup v1 hierarchies
    are read-only bind mounts, so inner containers fail with "read-only file system" until
    each is remounted read-write (a plain remount says "busy"). A restarted node keeps
    the pid files of its previous run in /run, and dockerd refuses to start over them.
    `--tls=false`: dockerd 20.10 on TCP without TLS otherwise sleeps 15 s at start.
    `--insecure-registry` for the lab's own subnet: the nodes pull from the lab's
    registry (`lab up --registry`) over plain HTTP on the lab network."""
    dockerd = ["dockerd", "--host=unix:///var/run/docker.sock",
               f"--host=tcp://0.0.0.0:{ENGINE_PORT}", "--tls=false",
               f"--insecure-registry={subnet}"]
    return "; ".join([
        "set -e",
        "for m in $(awk '$3 == \"cgroup\" || $3 == \"cgroup2\" {print $2}' /proc/mounts); "
        'do mount -o remount,bind,rw "$m"; done',
        "rm -f /var/run/docker.pid /var/run/docker/containerd/containerd.pid",
        "exec " + shlex.join(dockerd),
    ])


def node_command(subnet: str) -> list[str]:
    return ["sh", "-c", node_script(subnet)]


# What a node needs instead of --privileged, which fails here: the bounding set lacks
# CAP_SYS_RESOURCE and docker 20.10 ignores --cap-drop together with --privileged.
NODE_CAP_ADD = ("ALL",)
NODE_CAP_DROP = ("SYS_RESOURCE",)
NODE_SECURITY_OPT = ("seccomp=unconfined", "apparmor=unconfined")
# The CLI's `--security-opt systempaths=unconfined`, which the API refuses as a security
# option: nothing of /proc and /sys masked or read-only, so dockerd can set its sysctls.
NODE_SYSTEM_PATHS = {"MaskedPaths": [], "ReadonlyPaths": []}
NODE_DEVICE_CGROUP_RULES = ("a *:* rwm",)  # inner containers make their own /dev nodes
NODE_DEVICES = ("/dev/fuse:/dev/fuse:rwm",)  # for fuse-overlayfs, when overlay2 cannot
# Nothing: DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1 would stop every pull of a task's
# image, the registry mode's too. Loaded images are named by id, which no node pulls.
NODE_ENVIRONMENT: dict[str, str] = {}


def node_host_config(lab: str, index: int) -> dict[str, Any]:
    """Keyword arguments of the engine's create_host_config for node `index`. Its
    /var/lib/docker is a named volume: overlay2 does not work on the container's own
    overlay root, and a volume keeps the node's swarm membership across a restart."""
    return {
        "cap_add": list(NODE_CAP_ADD),
        "cap_drop": list(NODE_CAP_DROP),
        "security_opt": list(NODE_SECURITY_OPT),
        "device_cgroup_rules": list(NODE_DEVICE_CGROUP_RULES),
        "devices": list(NODE_DEVICES),
        "binds": {volume_name(lab, index): {"bind": "/var/lib/docker", "mode": "rw"}},
    }


def node_config_hash(lab: str, index: int, subnet: str) -> str:
    """What the node container is made of (its command, environment and host config),
    as a label: a node made by another version of these is outdated, and `lab up`
    makes it again (keeping its volume, so its images and swarm membership stay)."""
    from shopctl.fingerprint import data_hash

    return data_hash({"command": node_command(subnet), "env": NODE_ENVIRONMENT,
                      "host": node_host_config(lab, index), "paths": NODE_SYSTEM_PATHS})[:16]


def node_labels(lab: str, index: int, address: str, subnet: str) -> dict[str, str]:
    return {LABEL_LAB: lab, LABEL_INDEX: str(index), LABEL_ADDRESS: address,
            LABEL_CONFIG: node_config_hash(lab, index, subnet)}


def outdated(container_labels: dict[str, str], lab: str, index: int, subnet: str) -> bool:
    """Whether a node container was made with other flags than this version's."""
    return container_labels.get(LABEL_CONFIG) != node_config_hash(lab, index, subnet)


# ---- the lab's life ---------------------------------------------------------------------

def lab_up(
    nodes: int = DEFAULT_NODES,
    name: str = DEFAULT_NAME,
    progress: Progress = no_progress,
    client: docker.DockerClient | None = None,
    registry: bool = False,
    registry_port: int | None = None,
) -> Lab:
    """Make the lab exist, every node running and Ready in one swarm (see the contract);
    with `registry`, its registry too (shopctl.lab_registry), on loopback at
    `registry_port` (default: the one it has, else 5000)."""
    from shopctl.docker_client import connect
    from shopctl.images.base import SWARM_NODE_IMAGE, ensure_image
    from shopctl.images.cache import file_lock

    if nodes < 1:
        raise UsageError(f"a lab needs at least one node, not {nodes}")
    client = client or connect()
    with file_lock(f"lab-{name}"):
        existing = _containers(client, name)
        if len(existing) > nodes:
            raise UsageError(
                f"lab {name!r} has {len(existing)} nodes, more than the {nodes} asked for",
                hint=f"`shopctl lab down` first to make it smaller, or ask for {len(existing)}")
        network, subnet = _ensure_network(client, name)
        stale = {index for index, container in existing.items()
                 if outdated(container.labels, name, index, subnet)}
        image = None
        if len(existing) < nodes or stale:
            image = ensure_image(client, SWARM_NODE_IMAGE, progress).image_id
        _parallel(lambda index: _ensure_node(client, name, index, subnet, existing.get(index),
                                             image, progress, index in stale),
                  range(1, nodes + 1))
        _form_swarm(client, name, subnet, nodes, progress)
        if registry:
            from shopctl.lab_registry import ensure_registry

            ensure_registry(client, name, subnet, registry_port, progress,
                            labels={LABEL_LAB: name}, config_label=LABEL_CONFIG)
        return _observe(client, name, network, subnet)


def lab_status(name: str = DEFAULT_NAME, client: docker.DockerClient | None = None) -> Lab | None:
    """The lab as it is, asking the manager (when it runs) how each node is; None when
    neither a node nor the network of lab `name` exists."""
    from shopctl.docker_client import connect, docker_errors

    client = client or connect()
    with docker_errors(f"looking up lab {name}"):
        networks = client.networks.list(filters={"label": f"{LABEL_LAB}={name}"})
    containers = _containers(client, name)
    if not networks and not containers:
        return None
    subnet = _subnet(networks[0]) if networks else ""
    return _observe(client, name, name if networks else "", subnet)


def lab_down(name: str = DEFAULT_NAME, progress: Progress = no_progress,
             client: docker.DockerClient | None = None) -> bool:
    """Remove every container, volume and network labelled for lab `name`. Returns
    whether there was anything to remove."""
    import docker.errors

    from shopctl.docker_client import connect, docker_errors
    from shopctl.images.cache import file_lock

    client = client or connect()
    selector = {"label": f"{LABEL_LAB}={name}"}
    found = False
    with file_lock(f"lab-{name}"), docker_errors(f"removing lab {name}"):
        def remove(container) -> None:
            progress(container.name, "removing")
            try:
                container.remove(force=True, v=True)
            except docker.errors.NotFound:
                pass
            progress(container.name, "removed")

        containers = client.containers.list(all=True, filters=selector)
        found = bool(containers)
        _parallel(remove, containers)
        for volume in client.volumes.list(filters=selector):
            found = True
            try:
                volume.remove(force=True)
            except docker.errors.NotFound:
                pass
        for network in client.networks.list(filters=selector):
            found = True
            progress(network.name, "removing")
            try:
                network.remove()
            except docker.errors.NotFound:
                pass
            progress(network.name, "removed network")
    return found


def load_images(
    lab: Lab,
    images: Sequence[str],
    progress: Progress = no_progress,
    client: docker.DockerClient | None = None,
) -> list[LoadedImage]:
    """Copy host images onto every running node of `lab` (docker save once, docker load
    into the nodes in parallel), keeping their names and ids. Content-hash tags stay
    what tells a rebuilt image from the old one: a node that has the image's id already
    is only (re)tagged."""
    from shopctl.docker_client import connect

    client = client or connect()
    nodes = [n for n in lab.nodes if n.state == "running"]
    if not nodes:
        raise LabError(f"lab {lab.name!r} has no running node to load images onto",
                       hint="`shopctl lab up` starts it")
    done: list[LoadedImage] = []
    for image in images:
        host_id = _host_image_id(client, image)
        missing = []
        for node in nodes:
            if _tag_if_present(node, image, host_id):
                done.append(LoadedImage(node.name, image, "present", 0.0))
                progress(node.name, f"already has {image}")
            else:
                missing.append(node)
        if missing:
            done.extend(_copy_image(client, image, host_id, missing, progress))
    return done


# ---- the engine-facing steps ------------------------------------------------------------

def _engine(node_host: str, timeout: int | None = None) -> docker.DockerClient:
    import docker

    from shopctl.docker_client import LONG_TIMEOUT

    # The version given, not "auto": auto asks the engine at construction, and a node's
    # engine is polled before it answers. Every node runs the image's dockerd 20.10.
    return docker.DockerClient(base_url=node_host, version=NODE_API_VERSION,
                               timeout=timeout or LONG_TIMEOUT)


def _containers(client: docker.DockerClient, name: str) -> dict[int, Any]:
    """The lab's node containers by index."""
    from shopctl.docker_client import docker_errors

    with docker_errors(f"looking up lab {name}"):
        found = client.containers.list(all=True, filters={"label": f"{LABEL_LAB}={name}"})
    by_index = {}
    for container in found:
        try:
            by_index[int(container.labels.get(LABEL_INDEX, ""))] = container
        except ValueError:
            continue
    return dict(sorted(by_index.items()))


def _subnet(network) -> str:
    configs = (network.attrs.get("IPAM") or {}).get("Config") or []
    return configs[0].get("Subnet", "") if configs else ""


def _ensure_network(client: docker.DockerClient, name: str) -> tuple[str, str]:
    """The lab's bridge network with a subnet of its own, so each node keeps one address
    for its life (the swarm's members find each other by address). The engine picks a
    free subnet for a first network, which is then made again with that subnet fixed,
    since fixed addresses need a subnet given at creation."""
    import docker.types

    from shopctl.docker_client import docker_errors

    labels = {LABEL_LAB: name}
    with docker_errors(f"creating the network of lab {name}"):
        found = client.networks.list(names=[name], filters={"label": f"{LABEL_LAB}={name}"})
        for network in found:
            if network.name == name and _subnet(network):
                return name, _subnet(network)
        probe = client.networks.create(name, driver="bridge", labels=labels)
        probe.reload()
        subnet = _subnet(probe)
        probe.remove()
        gateway = str(ipaddress.ip_network(subnet).network_address + 1)
        ipam = docker.types.IPAMConfig(
            pool_configs=[docker.types.IPAMPool(subnet=subnet, gateway=gateway)])
        client.networks.create(name, driver="bridge", ipam=ipam, labels=labels)
    return name, subnet


def _ensure_node(client: docker.DockerClient, lab: str, index: int, subnet: str,
                 container, image: str | None, progress: Progress, stale: bool = False) -> None:
    """Node `index` running with its engine answering: reused, restarted or created;
    a `stale` one (made with other flags) is made again on its volume."""
    from shopctl.docker_client import docker_errors

    name = node_name(lab, index)
    address = node_address(subnet, index)
    if container is not None and container.labels.get(LABEL_ADDRESS) != address:
        raise LabError(f"lab node {name} was made for another network than {lab}'s "
                       f"({container.labels.get(LABEL_ADDRESS)} is not in {subnet})",
                       hint=f"`shopctl lab down --name {lab}` and `up` again start afresh")
    if container is not None and stale:
        progress(name, "making it again (its engine's flags changed; images and swarm "
                 "membership stay on its volume)")
        with docker_errors(f"replacing lab node {name}"):
            container.stop(timeout=10)
            container.remove()
        container = None
    reused = container is not None and container.status == "running"
    with docker_errors(f"starting lab node {name}"):
        if reused:
            progress(name, "reusing (running)")
        elif container is not None:
            progress(name, f"restarting (was {container.status})")
            container.start()  # the start-up script removes the stale pid files
        else:
            assert image is not None
            progress(name, "creating")
            client.volumes.create(volume_name(lab, index), labels={LABEL_LAB: lab})
            api = client.api
            created = api.create_container(
                image, command=node_command(subnet), name=name, hostname=name,
                environment=dict(NODE_ENVIRONMENT),
                labels=node_labels(lab, index, address, subnet),
                host_config=api.create_host_config(**node_host_config(lab, index))
                | NODE_SYSTEM_PATHS,
                networking_config=api.create_networking_config(
                    {lab: api.create_endpoint_config(ipv4_address=address)}),
            )
            container = client.containers.get(created["Id"])
            container.start()
    began = time.monotonic()
    _wait_for_engine(container, f"tcp://{address}:{ENGINE_PORT}", name)
    if not reused:
        progress(name, f"engine up in {time.monotonic() - began:.1f}s")


def _wait_for_engine(container, host: str, name: str, timeout: float = ENGINE_TIMEOUT) -> None:
    import docker.errors
    import requests.exceptions

    from shopctl.docker_client import log_tail

    deadline = time.monotonic() + timeout
    engine = _engine(host, timeout=3)
    try:
        while True:
            try:
                engine.ping()
                return
            except (docker.errors.DockerException, requests.exceptions.RequestException):
                pass
            container.reload()
            if container.status not in ("running", "created"):
                raise LabError(f"lab node {name} stopped before its engine answered "
                               f"({container.status})", hint=log_tail(container))
            if time.monotonic() > deadline:
                raise LabError(f"lab node {name}'s engine did not answer on {host} within "
                               f"{timeout:.0f}s", hint=log_tail(container))
            time.sleep(0.2)
    finally:
        engine.close()


def _form_swarm(client: docker.DockerClient, lab: str, subnet: str, nodes: int,
                progress: Progress) -> None:
    """Node 1 the manager (initialised once), every other node a worker of its swarm;
    then wait until the manager sees them all Ready, dropping the stale entries a node
    left behind when it had to join again."""
    from shopctl.docker_client import docker_errors

    manager_name = node_name(lab, 1)
    manager_address = node_address(subnet, 1)
    manager = _engine(f"tcp://{manager_address}:{ENGINE_PORT}")
    with docker_errors(f"forming the swarm of lab {lab}"):
        state = _swarm_state(manager)
        if not state.get("ControlAvailable"):
            if state.get("LocalNodeState") == "active":
                manager.swarm.leave(force=True)  # a worker of some other swarm
            manager.swarm.init(advertise_addr=manager_address,
                               listen_addr=f"0.0.0.0:{SWARM_PORT}")
            progress(manager_name, "swarm initialised (manager)")
        manager.swarm.reload()
        token = manager.swarm.attrs["JoinTokens"]["Worker"]
        remote = f"{manager_address}:{SWARM_PORT}"
        members = {node.id for node in manager.nodes.list()}

        def join(index: int) -> None:
            name = node_name(lab, index)
            address = node_address(subnet, index)
            worker = _engine(f"tcp://{address}:{ENGINE_PORT}")
            with docker_errors(f"joining {name} to the swarm of lab {lab}"):
                state = _swarm_state(worker)
                # A member by the manager's own list: a node that kept the state of a swarm
                # since made afresh (the manager's volume was lost) is not, and joins again.
                if state.get("LocalNodeState") == "active" and state.get("NodeID") in members:
                    return
                if state.get("LocalNodeState") in ("active", "error"):
                    worker.swarm.leave(force=True)
                worker.swarm.join(remote_addrs=[remote], join_token=token,
                                  advertise_addr=address, listen_addr=f"0.0.0.0:{SWARM_PORT}")
                progress(name, "joined the swarm")
            worker.close()

        _parallel(join, range(2, nodes + 1))
        _wait_ready(manager, lab, nodes, progress)
    manager.close()


def _swarm_state(engine: docker.DockerClient, timeout: float = 30.0) -> dict[str, Any]:
    """The engine's swarm section of `info`, once it is past "pending" (a restarted
    node is still reconnecting)."""
    deadline = time.monotonic() + timeout
    while True:
        state = engine.info().get("Swarm") or {}
        if state.get("LocalNodeState") != "pending" or time.monotonic() > deadline:
            return state
        time.sleep(0.2)


def _wait_ready(manager: docker.DockerClient, lab: str, nodes: int, progress: Progress,
                timeout: float = READY_TIMEOUT) -> None:
    wanted = {node_name(lab, i) for i in range(1, nodes + 1)}
    deadline = time.monotonic() + timeout
    while True:
        listed = manager.nodes.list()
        ready = {n.attrs["Description"]["Hostname"] for n in listed
                 if n.attrs["Status"]["State"] == "ready"}
        for node in listed:  # an old entry of a node that joined again under a new id
            if (node.attrs["Status"]["State"] == "down"
                    and node.attrs["Description"]["Hostname"] in ready):
                node.remove(force=True)
        if wanted <= ready:
            for name in sorted(wanted):
                progress(name, "ready")
            return
        if time.monotonic() > deadline:
            raise LabError(f"lab {lab}: not Ready in the swarm after {timeout:.0f}s: "
                           f"{', '.join(sorted(wanted - ready))}",
                           hint=f"`DOCKER_HOST={manager.api.base_url} docker node ls` shows "
                           "the swarm's view; `shopctl lab down` and `up` start afresh")
        time.sleep(0.3)


def _observe(client: docker.DockerClient, lab: str, network: str, subnet: str) -> Lab:
    containers = _containers(client, lab)
    swarm: dict[str, str] = {}
    manager = containers.get(1)
    if manager is not None and manager.status == "running":
        engine = _engine(f"tcp://{manager.labels[LABEL_ADDRESS]}:{ENGINE_PORT}", timeout=5)
        try:
            swarm = {n.attrs["Description"]["Hostname"]: n.attrs["Status"]["State"]
                     for n in engine.nodes.list()}
        except Exception:  # noqa: BLE001 - not a manager (yet), or not answering: unknown
            swarm = {}
        finally:
            engine.close()
    nodes = tuple(
        LabNode(name=c.name, container=c.id, address=c.labels.get(LABEL_ADDRESS, ""),
                role=role_of(index), state=c.status,
                swarm=swarm.get(c.name, "absent" if swarm else "unknown"))
        for index, c in containers.items())
    from shopctl.lab_registry import observe_registry

    return Lab(name=lab, network=network, subnet=subnet, nodes=nodes,
               registry=observe_registry(client, lab, {LABEL_LAB: lab}))


def _copy_image(client: docker.DockerClient, image: str, image_id: str,
                nodes: list[LabNode], progress: Progress) -> list[LoadedImage]:
    """docker save `image` into a file once, docker load it into `nodes` in parallel."""
    from shopctl.docker_client import docker_errors
    from shopctl.images.cache import cache_path

    started = time.monotonic()
    progress(image, "saving from the host engine")
    with tempfile.TemporaryDirectory(dir=cache_path("lab")) as folder:
        archive = os.path.join(folder, "image.tar")
        with docker_errors(f"saving {image}"), open(archive, "wb") as out:
            for chunk in client.api.get_image(image, chunk_size=1 << 20):
                out.write(chunk)
        progress(image, f"saved in {time.monotonic() - started:.1f}s")

        def load(node: LabNode) -> LoadedImage:
            began = time.monotonic()
            progress(node.name, f"loading {image}")
            _load(node, archive, image, image_id)
            seconds = time.monotonic() - began
            progress(node.name, f"loaded {image} in {seconds:.1f}s")
            return LoadedImage(node.name, image, "loaded", seconds)

        return _parallel(load, nodes)


def _host_image_id(client: docker.DockerClient, image: str) -> str:
    import docker.errors

    from shopctl.docker_client import docker_errors

    with docker_errors(f"looking up image {image}"):
        try:
            return client.images.get(image).id
        except docker.errors.ImageNotFound:
            raise LabError(f"image {image} is not in the host engine, so it cannot be "
                           "loaded onto the lab's nodes",
                           hint="build it first (`shopctl up` builds a project's images)"
                           ) from None


def _tag_if_present(node: LabNode, image: str, image_id: str) -> bool:
    """Whether the node has `image_id`; if so, named `image` there too."""
    import docker.errors

    from shopctl.docker_client import docker_errors

    engine = _engine(node.docker_host)
    try:
        with docker_errors(f"looking up {image} on {node.name}"):
            try:
                found = engine.images.get(image_id)
            except docker.errors.ImageNotFound:
                return False
            if image not in found.tags:
                repository, _, tag = image.rpartition(":")
                if not repository or "/" in tag:
                    repository, tag = image, "latest"
                found.tag(repository, tag)
            return True
    finally:
        engine.close()


def _load(node: LabNode, archive: str, image: str, image_id: str) -> None:
    from shopctl.docker_client import docker_errors

    engine = _engine(node.docker_host)
    try:
        with docker_errors(f"loading {image} onto {node.name}"), open(archive, "rb") as data:
            engine.images.load(data)
        if not _tag_if_present(node, image, image_id):
            raise LabError(f"{node.name} loaded {image} but does not have its id {image_id}")
    finally:
        engine.close()


def _parallel(work: Callable[[Any], Any], items) -> list[Any]:
    """`work` on every item at once (each talks to its own engine, and may call progress
    from its thread); the results in order, the first error raised once all are done."""
    items = list(items)
    if len(items) <= 1:
        return [work(item) for item in items]
    with ThreadPoolExecutor(max_workers=len(items), thread_name_prefix="shopctl-lab") as pool:
        futures = [pool.submit(work, item) for item in items]
    return [future.result() for future in futures]

