"""Prometheus in the docker runtime: one or two more infra units of the project.

    promsd      the Consul bridge (http_sd.py, copied in) on infra.base_image, serving
                http_sd on :9091 inside the project network, as nobody
    prometheus  infra.prometheus.image, 127.0.0.1:<port> -> 9090, config copied in at
                /etc/shopctl-prometheus/, TSDB on the volume shopctl-P-prometheus-data

Both scrape and discover over the project network: Consul registers services at their
bridge IPs, which Prometheus reaches directly, and the infra units reach each other by
name. Files are copied into the created container before it starts (no bind mounts:
the engine need not share our disk). Each spec's hash covers image, arguments and
files, so a second `up` keeps running containers and a change replaces them. With
discovery "consul" (a prom/prometheus image) there is no bridge: Prometheus asks Consul
itself.

Neither runs as root: the bridge runs as nobody, and so does shopctl's Prometheus image
(as the official one), which owns the TSDB; a TSDB volume an older shopctl's Prometheus
wrote as root is handed over to nobody before the container starts (volume_owner).

Pure: these functions read the config and build specs; shopctl.runtime.docker runs them.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

from shopctl import consul_acl, infra_names
from shopctl.fingerprint import data_hash
from shopctl.images.prometheus import PROMETHEUS_GID, PROMETHEUS_IMAGE, PROMETHEUS_UID, TSDB_DIR
from shopctl.prom.promconfig import consul_sd_config, discovery_mode, http_sd_config
from shopctl.units import PortSpec, Readiness, UnitSpec

if TYPE_CHECKING:
    from shopctl.config import ShopConfig

PROMETHEUS = infra_names.PROMETHEUS
BRIDGE = infra_names.PROMSD
PROMETHEUS_PORT = 9090  # inside the container
BRIDGE_PORT = 9091
CONSUL_ADDR = f"{infra_names.CONSUL}:8500"  # Consul on the project network
CONFIG_DIR = "/etc/shopctl-prometheus"
BRIDGE_DIR = "/opt/shopctl-promsd"
BRIDGE_SCRIPT = Path(__file__).with_name("http_sd.py")
READY_TIMEOUT = 60.0
BRIDGE_USER = "65534:65534"  # nobody: the bridge only reads its files and serves HTTP


def units(config: ShopConfig) -> list[UnitSpec]:
    """Prometheus (and, for http discovery, its bridge first) as infra.prometheus says;
    none when it is disabled."""
    if not config.infra.prometheus.enabled:
        return []
    if discovery_mode(config, "docker") == "http":
        url = f"http://{BRIDGE}:{BRIDGE_PORT}/targets"
        return [bridge(config), prometheus(config, http_sd_config(url))]
    text = consul_sd_config(CONSUL_ADDR, config.project,
                            consul_acl.service_token(config, consul_acl.READER))
    return [prometheus(config, text)]


def prometheus(config: ShopConfig, text: str) -> UnitSpec:
    prom = config.infra.prometheus
    args = (f"--config.file={CONFIG_DIR}/prometheus.yml", "--storage.tsdb.path=/prometheus",
            f"--web.listen-address=0.0.0.0:{PROMETHEUS_PORT}", "--web.enable-lifecycle")
    return UnitSpec(
        name=PROMETHEUS, role="infra", image=prom.image, command=args,
        ports=(PortSpec(prom.port, PROMETHEUS_PORT, "infra.prometheus.port"),),
        volumes={PROMETHEUS: TSDB_DIR},
        files={CONFIG_DIR: {"prometheus.yml": text.encode()}}, files_mode=0o444,
        # shopctl's image runs as nobody; other images decide their own user
        volume_owner=(PROMETHEUS_UID, PROMETHEUS_GID) if prom.image == PROMETHEUS_IMAGE
        else None,
        readiness=Readiness("http", prom.port, "/-/ready", timeout=READY_TIMEOUT),
        config_hash=data_hash({"image": prom.image, "args": list(args), "config": text,
                               "port": prom.port})[:16],
    )


def bridge(config: ShopConfig) -> UnitSpec:
    project = config.project
    image = config.infra.base_image
    command = ["python3", f"{BRIDGE_DIR}/http_sd.py", "--consul", f"http://{CONSUL_ADDR}",
               "--listen", f"0.0.0.0:{BRIDGE_PORT}", "--project", project]
    files = {"http_sd.py": BRIDGE_SCRIPT.read_bytes()}
    token = consul_acl.service_token(config, consul_acl.READER)
    if token:
        files["consul_token"] = token.encode()
        command += ["--token-file", f"{BRIDGE_DIR}/consul_token"]
    return UnitSpec(
        name=BRIDGE, role="infra", image=image, command=tuple(command),
        files={BRIDGE_DIR: files}, files_mode=0o444, user=BRIDGE_USER,
        noun="the Consul bridge",
        config_hash=data_hash({"image": image, "command": command, "user": BRIDGE_USER,
                               "files": {k: hashlib.sha256(v).hexdigest()
                                         for k, v in files.items()}})[:16],
    )
