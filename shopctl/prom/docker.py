"""Prometheus in the docker runtime: one or two more infra containers of the project.

    shopctl-P-promsd      the Consul bridge (http_sd.py, copied in) on infra.base_image,
                          serving http_sd on :9091 inside the project network
    shopctl-P-prometheus  infra.prometheus.image, 127.0.0.1:<port> -> 9090, config copied
                          in at /etc/shopctl-prometheus/, TSDB on the volume
                          shopctl-P-prometheus-data

Both scrape and discover over the project network: Consul registers services at their
bridge IPs, which Prometheus reaches directly. Files are copied into the created
container before it starts (no bind mounts: the engine need not share our disk). The
io.shopctl.config-hash label covers image, arguments and copied files, so a second
`up` keeps running containers and a change replaces them. With discovery "consul"
(a prom/prometheus image) there is no bridge: Prometheus asks Consul itself.

Neither runs as root: the bridge runs as nobody, and so does shopctl's Prometheus image
(as the official one), which owns the TSDB; a TSDB volume an older shopctl's Prometheus
wrote as root is handed over to nobody before the container starts.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
import time
from typing import TYPE_CHECKING, Any

from shopctl import consul_acl, infra_names
from shopctl.docker_client import docker_errors
from shopctl.fingerprint import data_hash
from shopctl.images.prometheus import PROMETHEUS_GID, PROMETHEUS_IMAGE, PROMETHEUS_UID, TSDB_DIR
from shopctl.prom.local import BRIDGE_SCRIPT, http_ok
from shopctl.prom.promconfig import consul_sd_config, discovery_mode, http_sd_config
from shopctl.runtime.docker_volumes import hand_over
from shopctl.units import LABEL_HASH, LABEL_PROJECT, LABEL_ROLE, LABEL_SERVICE, Progress

if TYPE_CHECKING:
    from collections.abc import Callable

    from shopctl.config import ShopConfig
    from shopctl.runtime.docker import DockerRuntime

PROMETHEUS = infra_names.PROMETHEUS
BRIDGE = infra_names.PROMSD
PROMETHEUS_PORT = 9090  # inside the container
BRIDGE_PORT = 9091
CONFIG_DIR = "/etc/shopctl-prometheus"
BRIDGE_DIR = "/opt/shopctl-promsd"
READY_TIMEOUT = 60.0
BRIDGE_USER = "65534:65534"  # nobody: the bridge only reads its files and serves HTTP


def _tar(folder: str, files: dict[str, bytes]) -> bytes:
    """A tar of `folder` and its files (readable by any user), for put_archive at "/"."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        entry = tarfile.TarInfo(folder.strip("/"))
        entry.type, entry.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(entry)
        for name, data in files.items():
            entry = tarfile.TarInfo(f"{folder.strip('/')}/{name}")
            entry.size, entry.mode = len(data), 0o644
            tar.addfile(entry, io.BytesIO(data))
    return buffer.getvalue()


def sync_prometheus(runtime: DockerRuntime, config: ShopConfig, progress: Progress) -> str | None:
    """The docker runtime's hook: Prometheus (and its bridge) as infra.prometheus says;
    returns Prometheus' URL on the host, or None when it is disabled."""
    from shopctl.runtime.docker import container_name

    project = config.project
    prom = config.infra.prometheus
    if not prom.enabled:
        for part in (PROMETHEUS, BRIDGE):
            found = runtime._container(container_name(project, part))
            if found is not None:
                progress(part, "removing (infra.prometheus.enabled is false)")
                runtime._remove(found)
        return None
    from shopctl.images.base import ensure_image

    ensure_image(runtime.client, prom.image, progress)
    if discovery_mode(config, "docker") == "http":
        _ensure_bridge(runtime, config, progress)
        text = http_sd_config(f"http://{container_name(project, BRIDGE)}:{BRIDGE_PORT}/targets")
    else:
        found = runtime._container(container_name(project, BRIDGE))
        if found is not None:
            runtime._remove(found)
        text = consul_sd_config(f"{container_name(project, infra_names.CONSUL)}:8500", project,
                                consul_acl.service_token(config, consul_acl.READER))
    args = [f"--config.file={CONFIG_DIR}/prometheus.yml", "--storage.tsdb.path=/prometheus",
            f"--web.listen-address=0.0.0.0:{PROMETHEUS_PORT}", "--web.enable-lifecycle"]
    files = {"prometheus.yml": text.encode()}
    wanted = data_hash({"image": _image_id(runtime, prom.image), "args": args, "config": text,
                        "port": prom.port})[:16]
    name = container_name(project, PROMETHEUS)
    if _current(runtime, name, wanted, progress, PROMETHEUS) is None:
        runtime._check_port(prom.port, "starting prometheus")
        volume = runtime._ensure_volume(project, PROMETHEUS)
        progress(PROMETHEUS, f"starting container {name} ({prom.image})")
        _create(
            runtime, config, PROMETHEUS, prom.image, args, wanted, CONFIG_DIR, files,
            ports={PROMETHEUS_PORT: ("127.0.0.1", prom.port)},
            binds={volume: {"bind": "/prometheus", "mode": "rw"}},
            before_start=_tsdb_to_prometheus_user(runtime, config, prom.image, progress),
        )
    url = f"http://127.0.0.1:{prom.port}"
    progress(PROMETHEUS, "waiting until ready")
    runtime._wait_ready(config, PROMETHEUS, lambda: http_ok(f"{url}/-/ready"),
                        time.monotonic() + READY_TIMEOUT)
    progress(PROMETHEUS, f"ready on :{prom.port}")
    return url


def _ensure_bridge(runtime: DockerRuntime, config: ShopConfig, progress: Progress) -> None:
    from shopctl.runtime.docker import container_name

    project = config.project
    image = config.infra.base_image
    source = BRIDGE_SCRIPT.read_bytes()
    command = ["python3", f"{BRIDGE_DIR}/http_sd.py",
               "--consul", f"http://{container_name(project, infra_names.CONSUL)}:8500",
               "--listen", f"0.0.0.0:{BRIDGE_PORT}", "--project", project]
    files = {"http_sd.py": source}
    token = consul_acl.service_token(config, consul_acl.READER)
    if token:
        files["consul_token"] = token.encode()
        command += ["--token-file", f"{BRIDGE_DIR}/consul_token"]
    wanted = data_hash({"image": _image_id(runtime, image), "command": command,
                        "files": {k: hashlib.sha256(v).hexdigest() for k, v in files.items()},
                        "user": BRIDGE_USER})[:16]
    name = container_name(project, BRIDGE)
    if _current(runtime, name, wanted, progress, BRIDGE) is None:
        progress(BRIDGE, f"starting the Consul bridge {name}")
        _create(runtime, config, BRIDGE, image, command, wanted, BRIDGE_DIR, files,
                user=BRIDGE_USER)


def _tsdb_to_prometheus_user(
    runtime: DockerRuntime, config: ShopConfig, image: str, progress: Progress
) -> Callable[[str], object] | None:
    """For shopctl's image, which runs as nobody: hand a TSDB an older one wrote as root
    over before Prometheus starts (shopctl.runtime.docker_volumes). Other images decide
    their own user."""
    if image != PROMETHEUS_IMAGE:
        return None
    return lambda container: hand_over(
        runtime.client, container, image, TSDB_DIR, PROMETHEUS_UID, PROMETHEUS_GID,
        labels={LABEL_PROJECT: config.project}, subject=PROMETHEUS, progress=progress)


def _image_id(runtime: DockerRuntime, image: str) -> str:
    with docker_errors(f"looking up image {image}"):
        return runtime.client.images.get(image).id


def _current(
    runtime: DockerRuntime, name: str, wanted: str, progress: Progress, part: str
) -> Any:
    """The container when it exists as wanted (started if it was stopped), else None
    after removing whatever stood in its place."""
    found = runtime._container(name)
    if found is None:
        return None
    if found.labels.get(LABEL_HASH) != wanted:
        progress(part, "replacing (its configuration changed)")
        runtime._remove(found)
        return None
    if found.status != "running":
        progress(part, "starting the existing container")
        with docker_errors(f"starting {part}"):
            found.start()
    else:
        progress(part, "running")
    return found


def _create(
    runtime: DockerRuntime,
    config: ShopConfig,
    part: str,
    image: str,
    command: list[str],
    config_hash: str,
    folder: str,
    files: dict[str, bytes],
    ports: dict[int, tuple[str, int]] | None = None,
    binds: dict[str, dict[str, str]] | None = None,
    user: str | None = None,
    before_start: Callable[[str], object] | None = None,
) -> None:
    from shopctl.runtime.docker import container_name, network_name

    project = config.project
    api = runtime.client.api
    with docker_errors(f"starting {part}"):
        host_config = api.create_host_config(
            port_bindings=ports or {},
            binds=binds or {},
            restart_policy={"Name": "on-failure", "MaximumRetryCount": 0},
            network_mode=network_name(project),
        )
        networking = api.create_networking_config(
            {network_name(project): api.create_endpoint_config(aliases=[part])}
        )
        created = api.create_container(
            image,
            command=command,
            name=container_name(project, part),
            hostname=part,
            user=user,  # None: the image's
            labels={LABEL_PROJECT: project, LABEL_SERVICE: part, LABEL_ROLE: "infra",
                    LABEL_HASH: config_hash},
            ports=list(ports or {}),
            host_config=host_config,
            networking_config=networking,
        )
        if before_start is not None:
            before_start(created["Id"])
        api.put_archive(created["Id"], "/", _tar(folder, files))
        api.start(created["Id"])
