"""The consul_sd relabelling (shopctl.prom.promconfig.consul_relabels), checked by a real
Prometheus. Debian's build has no consul_sd_configs, so file_sd hands it targets with
the very __meta_consul_* labels consul_sd would set; the rules must keep the project's
services at their metrics port and path, and drop Consul itself and other projects."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time

import httpx
import pytest
import yaml

from shopctl.prom.promconfig import consul_relabels


def consul_target(service: str, project: str, metrics_port: str, path: str = "/metrics") -> dict:
    return {"targets": ["127.0.0.1:8300"], "labels": {
        "__meta_consul_service": service,
        "__meta_consul_service_address": "127.0.0.1",
        "__meta_consul_service_metadata_project": project,
        "__meta_consul_service_metadata_kind": "grpc",
        "__meta_consul_service_metadata_metrics_port": metrics_port,
        "__meta_consul_service_metadata_metrics_path": path,
    }}


def test_relabelling_turns_consul_meta_into_scrape_targets(tmp_path):
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus is not installed (scripts/install-system.sh prometheus)")
    (tmp_path / "targets.json").write_text(json.dumps([
        consul_target("inventory", "shop", "9103", "/stats"),
        consul_target("users", "other", "8001"),
        consul_target("consul", "shop", ""),
    ]))
    config = {"global": {"scrape_interval": "1m"}, "scrape_configs": [{
        "job_name": "shop", "honor_labels": True,
        "file_sd_configs": [{"files": [str(tmp_path / "targets.json")]}],
        "relabel_configs": consul_relabels("shop"),
    }]}
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen(
        [binary, f"--config.file={tmp_path / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                resp = httpx.get(f"http://127.0.0.1:{port}/api/v1/targets", timeout=2)
                # While it starts, Prometheus answers 503 with a plain-text body.
                if resp.status_code == 200:
                    data = resp.json()
                    active = data["data"]["activeTargets"]
                    if active:
                        break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "Prometheus showed no target within 30 s"
            time.sleep(0.2)
        (target,) = active
        assert target["scrapeUrl"] == "http://127.0.0.1:9103/stats"
        labels = target["labels"]
        assert [labels[k] for k in ("service", "kind", "project")] == ["inventory", "grpc", "shop"]
        assert len(data["data"]["droppedTargets"]) == 2
    finally:
        server.terminate()
        server.wait(timeout=10)
