"""Prometheus in the local runtime: two more supervised units beside Consul.

    promsd      python3 http_sd.py: Consul's catalog as http_sd targets, on a free port
                (kept while the bridge runs)
    prometheus  Debian's /usr/bin/prometheus on 127.0.0.1:<infra.prometheus.port>,
                config and TSDB under .shopctl/local/data/_prometheus/

Each unit's config hash covers what it is started with (argv, generated config, the
bridge's source), so a second `up` reuses running units and a changed setting replaces
them. The bridge only runs in the "http" discovery mode. Pure: shopctl.runtime.local
runs these specs.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from shopctl import consul_acl, infra_names
from shopctl.errors import RuntimeUnavailable
from shopctl.fingerprint import data_hash
from shopctl.prom.promconfig import consul_sd_config, discovery_mode, http_sd_config
from shopctl.units import PortSpec, Readiness, UnitSpec

if TYPE_CHECKING:
    from shopctl.config import ShopConfig
    from shopctl.state import ProjectState

HOST = "127.0.0.1"
PROMETHEUS = infra_names.PROMETHEUS
BRIDGE = infra_names.PROMSD
BRIDGE_SCRIPT = Path(__file__).with_name("http_sd.py")
READY_TIMEOUT = 60.0


def units(config: ShopConfig, ps: ProjectState, python: str, running_ports: Mapping[str, int],
          free_port: Callable[[], int]) -> list[UnitSpec]:
    """Prometheus (and, for http discovery, its bridge first) as infra.prometheus says;
    none when it is disabled. The bridge keeps the port it runs on (`running_ports`), so
    Prometheus' config, which names it, stays the same."""
    if not config.infra.prometheus.enabled:
        return []
    if discovery_mode(config, "local") == "http":
        found = bridge(config, ps, python, running_ports.get(BRIDGE) or free_port())
        url = f"http://{HOST}:{found.main_port}/targets"
        return [found, prometheus(config, ps, http_sd_config(url))]
    text = consul_sd_config(f"{HOST}:{config.infra.consul.port}", config.project,
                            consul_acl.service_token(config, consul_acl.READER))
    return [prometheus(config, ps, text)]


def prometheus(config: ShopConfig, ps: ProjectState, text: str) -> UnitSpec:
    prom = config.infra.prometheus
    binary = shutil.which("prometheus")
    if binary is None:
        raise RuntimeUnavailable(
            "the prometheus binary is not on PATH (infra.prometheus.enabled is true)",
            hint="`make system` installs it (scripts/install-system.sh prometheus)",
        )
    data = ps.data_dir(f"_{PROMETHEUS}")
    argv = (binary, f"--config.file={data / 'prometheus.yml'}",
            f"--storage.tsdb.path={data / 'tsdb'}",
            f"--web.listen-address={HOST}:{prom.port}", "--web.enable-lifecycle")
    return UnitSpec(
        name=PROMETHEUS, role="infra", argv=argv, dirs=(str(data),),
        files={str(data): {"prometheus.yml": text.encode()}}, files_mode=0o644,
        ports=(PortSpec(prom.port, setting="infra.prometheus.port"),),
        readiness=Readiness("http", prom.port, "/-/ready", timeout=READY_TIMEOUT),
        config_hash=data_hash({"argv": list(argv), "config": text})[:16],
    )


def bridge(config: ShopConfig, ps: ProjectState, python: str, port: int) -> UnitSpec:
    consul = f"http://{HOST}:{config.infra.consul.port}"
    source = hashlib.sha256(BRIDGE_SCRIPT.read_bytes()).hexdigest()
    token = consul_acl.service_token(config, consul_acl.READER)  # created 0600 if new
    argv = [python, str(BRIDGE_SCRIPT), "--consul", consul, "--listen", f"{HOST}:{port}",
            "--project", config.project]
    if token:
        argv += ["--token-file", str(ps.secrets_dir / "consul" / consul_acl.READER)]
    return UnitSpec(
        name=BRIDGE, role="infra", argv=tuple(argv), dirs=(str(ps.data_dir(f"_{BRIDGE}")),),
        ports=(PortSpec(port),),
        readiness=Readiness("http", port, "/health", timeout=READY_TIMEOUT),
        noun="the Consul bridge",
        # not the port: a bridge replaced for another reason keeps its port
        config_hash=data_hash({"source": source, "consul": consul, "project": config.project,
                               "python": python, "acl": bool(token)})[:16],
    )
