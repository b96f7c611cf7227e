"""Issue 7 through the CLI, against a real Prometheus (Debian's 2.42) and a real Consul:
after `up` every service is an `up` target in Prometheus' /api/v1/targets; a service
scaffolded afterwards shows up there with no change to Prometheus or its config;
`config set payments.failure_rate 1` makes the running payments answer 503;
`metrics` and `status` report the rates. Local runtime for speed, one docker run."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import httpx
import pytest
import yaml

from shopctl import testing
from shopctl.images.prometheus import PROMETHEUS_IMAGE
from shopctl.service_auth import HEADER, Credentials
from shopctl.testing import free_ports
from tests.acceptance.conftest import REPO
from tests.acceptance.test_shop_roundtrip import make_project, project_images, shopctl_in


def with_prometheus(tmp_path: Path) -> tuple[Path, dict]:
    root, data = make_project(tmp_path)
    shutil.copytree(REPO / "templates", root / "templates",
                    ignore=shutil.ignore_patterns("__pycache__"))
    data["infra"]["prometheus"] = {"enabled": True, "port": free_ports(1)[0]}
    (root / "shop.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return root, data


def targets(data: dict) -> dict[str, str]:
    """{service: health} of the project's active targets, from Prometheus' own API."""
    url = f"http://127.0.0.1:{data['infra']['prometheus']['port']}/api/v1/targets"
    resp = httpx.get(url, timeout=5)
    if resp.status_code != 200:  # still starting: 503 with a plain-text body
        return {}
    active = resp.json()["data"]["activeTargets"]
    return {t["labels"]["service"]: t["health"] for t in active
            if t["labels"].get("project") == data["project"]}


def wait_for(predicate, timeout: float, what: str, interval: float = 0.5):
    """shopctl.testing.wait_for, polling Prometheus and the CLI less often."""
    return testing.wait_for(predicate, timeout, what, interval)


def all_up(data: dict, names: list[str]):
    def check():
        seen = targets(data)
        return seen if all(seen.get(n) == "up" for n in names) else False
    return check


@pytest.fixture
def local_project(tmp_path):
    root, data = with_prometheus(tmp_path)
    yield root, data
    shopctl_in(root, "down", "--volumes", "--runtime", "local", timeout=180)


@pytest.mark.consul
def test_prometheus_follows_consul_and_kv_changes_a_running_service(local_project):
    root, data = local_project
    up = shopctl_in(root, "up", "--runtime", "local")
    assert up.returncode == 0, up.stderr[-3000:]
    started = time.monotonic()
    services = list(data["services"])  # the demo's, before probe-api is scaffolded
    wait_for(all_up(data, services), 60, "every service up in Prometheus")
    print(f"targets up {time.monotonic() - started:.1f}s after `up` returned")

    # A new service: scaffolded, brought up, scraped. Prometheus is neither restarted
    # nor reconfigured.
    prom_run = root / ".shopctl/local/run/_prometheus.json"
    prom_yml = root / ".shopctl/local/data/_prometheus/prometheus.yml"
    pid, config_text = json.loads(prom_run.read_text())["child_pid"], prom_yml.read_text()
    (port,) = free_ports(1)
    made = shopctl_in(root, "scaffold", "new-service", "probe-api", "--kind", "fastapi",
                      "--port", str(port))
    assert made.returncode == 0, made.stderr
    up = shopctl_in(root, "up", "probe-api", "--runtime", "local")
    assert up.returncode == 0, up.stderr[-3000:]
    started = time.monotonic()
    wait_for(all_up(data, [*services, "probe-api"]), 60, "probe-api up in Prometheus")
    print(f"scaffolded service up {time.monotonic() - started:.1f}s after `up` returned")
    assert json.loads(prom_run.read_text())["child_pid"] == pid
    assert prom_yml.read_text() == config_text

    # A fault knob set in Consul KV reaches the running payments service.
    charges = f"http://127.0.0.1:{data['services']['payments']['port']}/charges"
    counter = iter(range(10**6))

    signer = Credentials.for_project(root, "tests")  # payments wants a service credential

    def charge() -> int:
        body = {"order_id": f"obs-{next(counter)}", "amount_cents": 100}
        return httpx.post(charges, json=body, timeout=5,
                          headers={HEADER: signer.token("payments", "charge")}).status_code

    assert charge() == 201
    changed = shopctl_in(root, "config", "set", "payments.failure_rate", "1")
    assert changed.returncode == 0, changed.stderr
    wait_for(lambda: charge() == 503, 15, "payments answering 503 after config set")
    got = shopctl_in(root, "config", "get", "payments.failure_rate")
    assert (got.returncode, got.stdout.strip()) == (0, "1")

    # ... and Prometheus sees the errors (rate() needs two scrapes, 5 s apart).
    def payments_errors():
        charge()
        result = shopctl_in(root, "metrics", "payments", "--json")
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        (row,) = report["services"]
        return row if report["source"] == "prometheus" and (row["error_rate"] or 0) > 0 else None

    row = wait_for(payments_errors, 45, "payments' error rate in `shopctl metrics`", interval=1)
    assert row["error_ratio"] > 0.5 and row["breaker"] in ("closed", "open", "half_open")
    assert row["p95_ms"] is not None

    status = shopctl_in(root, "status", "--json")
    report = json.loads(status.stdout)
    assert report["request_rate_from"] == "prometheus"
    rows = {r["name"]: r for r in report["services"]}
    assert rows["payments"]["request_rate"] > 0


@pytest.mark.docker
@pytest.mark.consul
def test_prometheus_in_docker_scrapes_every_service(tmp_path):
    import docker

    root, data = with_prometheus(tmp_path)
    try:
        up = shopctl_in(root, "up", "--runtime", "docker")
        assert up.returncode == 0, up.stderr[-3000:]
        started = time.monotonic()
        wait_for(all_up(data, list(data["services"])), 60, "every service up in Prometheus")
        print(f"docker: targets up {time.monotonic() - started:.1f}s after `up` returned")
        names = {c.name for c in docker.from_env().containers.list(
            filters={"label": f"io.shopctl.project={data['project']}"})}
        prefix = f"shopctl-{data['project']}-"
        assert {f"{prefix}prometheus", f"{prefix}promsd"} <= names
    finally:
        down = shopctl_in(root, "down", "--volumes", "--rmi", "--runtime", "docker",
                          timeout=180)
    assert down.returncode == 0, down.stderr[-2000:]
    assert docker.from_env().containers.list(
        all=True, filters={"label": f"io.shopctl.project={data['project']}"}) == []
    assert project_images(data["project"]) == []
    docker.from_env().images.get(PROMETHEUS_IMAGE)  # infra images stay


def test_config_commands_say_when_consul_is_unreachable(tmp_path):
    root, data = make_project(tmp_path)
    result = shopctl_in(root, "config", "set", "payments.failure_rate", "1", timeout=30)
    assert result.returncode == 1
    assert f"Consul is not reachable at http://127.0.0.1:{data['infra']['consul']['port']}" \
        in result.stderr
    result = shopctl_in(root, "config", "get", "paymnts.failure_rate", timeout=30)
    assert result.returncode == 2 and "did you mean 'payments'?" in result.stderr
