"""Prometheus in the local runtime: two more supervised units beside _consul.

    _promsd      python3 http_sd.py: Consul's catalog as http_sd targets, on a free port
    _prometheus  Debian's /usr/bin/prometheus on 127.0.0.1:<infra.prometheus.port>,
                 config and TSDB under .shopctl/local/data/_prometheus/

Each unit's config hash covers what it is started with (argv, generated config, the
bridge's source), so a second `up` reuses running units and a changed setting replaces
them. The bridge only runs in the "http" discovery mode.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from shopctl import consul_acl
from shopctl.errors import RuntimeUnavailable
from shopctl.fingerprint import data_hash
from shopctl.prom.promconfig import consul_sd_config, discovery_mode, http_sd_config
from shopctl.units import Progress, no_progress

if TYPE_CHECKING:
    from shopctl.config import ShopConfig
    from shopctl.runtime.local import LocalRuntime
    from shopctl.state import ProjectState

UNIT_PROMETHEUS = "_prometheus"
UNIT_PROMSD = "_promsd"
BRIDGE_SCRIPT = Path(__file__).with_name("http_sd.py")
READY_TIMEOUT = 60.0


def http_ok(url: str, timeout: float = 1.0) -> bool:
    import httpx  # here: every docker `up` imports this module, few reach this call

    try:
        return httpx.get(url, timeout=timeout, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False


def ensure_prometheus(
    runtime: LocalRuntime, config: ShopConfig, ps: ProjectState, progress: Progress = no_progress
) -> str:
    """Start (or keep) Prometheus and, for http discovery, its bridge; returns its URL."""
    from shopctl.runtime.local import HOST, Unit, read_record, require_free_port

    prom = config.infra.prometheus
    binary = shutil.which("prometheus")
    if binary is None:
        raise RuntimeUnavailable(
            "the prometheus binary is not on PATH (infra.prometheus.enabled is true)",
            hint="`make system` installs it (scripts/install-system.sh prometheus)",
        )
    data = ps.ensure(ps.data_dir(UNIT_PROMETHEUS))
    if discovery_mode(config, "local") == "http":
        sd_port = _ensure_bridge(runtime, config, ps, progress)
        text = http_sd_config(f"http://{HOST}:{sd_port}/targets")
    else:
        text = consul_sd_config(f"{HOST}:{config.infra.consul.port}", config.project,
                                consul_acl.service_token(config, consul_acl.READER))
    config_file = data / "prometheus.yml"
    argv = [
        binary, f"--config.file={config_file}", f"--storage.tsdb.path={data / 'tsdb'}",
        f"--web.listen-address={HOST}:{prom.port}", "--web.enable-lifecycle",
    ]
    wanted = data_hash({"argv": argv, "config": text})[:16]
    url = f"http://{HOST}:{prom.port}"
    record = read_record(ps, UNIT_PROMETHEUS)
    if runtime._running(ps, UNIT_PROMETHEUS) and (record or {}).get("config_hash") == wanted:
        progress("prometheus", f"running on :{prom.port}")
    else:
        runtime._stop_units(ps, [UNIT_PROMETHEUS])
        require_free_port(prom.port, "infra.prometheus.port", None)
        config_file.write_text(text)
        progress("prometheus", f"starting on :{prom.port}")
        unit = Unit(UNIT_PROMETHEUS, "infra", argv, data, dict(os.environ), wanted,
                    {"port": prom.port})
        runtime._launch(config, ps, unit)
    runtime._wait_ready(ps, UNIT_PROMETHEUS, "Prometheus", lambda: http_ok(f"{url}/-/ready"),
                        READY_TIMEOUT)
    progress("prometheus", "ready")
    return url


def _ensure_bridge(
    runtime: LocalRuntime, config: ShopConfig, ps: ProjectState, progress: Progress
) -> int:
    """The http_sd bridge's port, starting the bridge when it is not running as wanted."""
    from shopctl.runtime.local import HOST, Unit, free_port, read_record

    consul = f"http://{HOST}:{config.infra.consul.port}"
    source = hashlib.sha256(BRIDGE_SCRIPT.read_bytes()).hexdigest()
    token = consul_acl.service_token(config, consul_acl.READER)  # created 0600 if new
    wanted = data_hash({"source": source, "consul": consul, "project": config.project,
                        "python": runtime.python, "acl": bool(token)})[:16]
    record = read_record(ps, UNIT_PROMSD) or {}
    port = (record.get("meta") or {}).get("port")
    if runtime._running(ps, UNIT_PROMSD) and record.get("config_hash") == wanted and port:
        progress("prometheus", f"Consul bridge running on :{port}")
    else:
        runtime._stop_units(ps, [UNIT_PROMSD])
        port = free_port()
        data = ps.ensure(ps.data_dir(UNIT_PROMSD))
        argv = [runtime.python, str(BRIDGE_SCRIPT), "--consul", consul,
                "--listen", f"{HOST}:{port}", "--project", config.project]
        if token:
            argv += ["--token-file", str(ps.secrets_dir / "consul" / consul_acl.READER)]
        progress("prometheus", f"starting the Consul bridge on :{port}")
        runtime._launch(config, ps, Unit(UNIT_PROMSD, "infra", argv, data, dict(os.environ),
                                         wanted, {"port": port}))
    runtime._wait_ready(ps, UNIT_PROMSD, "the Prometheus bridge",
                        lambda: http_ok(f"http://{HOST}:{port}/health"), READY_TIMEOUT)
    return int(port)


def sync_prometheus(
    runtime: LocalRuntime, config: ShopConfig, ps: ProjectState, progress: Progress = no_progress
) -> str | None:
    """The local runtime's hook: Prometheus as infra.prometheus says (started and kept
    current when enabled, stopped when it was turned off); returns its URL or None."""
    from shopctl.runtime.local import read_record

    if config.infra.prometheus.enabled:
        return ensure_prometheus(runtime, config, ps, progress)
    leftovers = [unit for unit in (UNIT_PROMETHEUS, UNIT_PROMSD) if read_record(ps, unit)]
    if leftovers:
        progress("prometheus", "stopping (infra.prometheus.enabled is false)")
        runtime._stop_units(ps, leftovers)
    return None
