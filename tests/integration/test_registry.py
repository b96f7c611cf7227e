"""The registry against a real Consul agent, with real HTTP and gRPC services behind the checks.

The agent (the consul_http fixture of conftest.py) runs on free ports, every other port
disabled or private, so these tests can run next to a shop's own Consul and to each other.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from shopctl.config import ServiceConfig
from shopctl.registry import Registry
from shopctl.runtime.local import free_port
from shopctl.testing import wait_for
from shopctl.units import ServiceState

pytestmark = pytest.mark.consul

FAST_CHECKS = {"interval": "300ms", "timeout": "500ms"}


@pytest.fixture
def registry(consul_http) -> Iterator[Registry]:
    reg = Registry(consul_http, f"t{uuid.uuid4().hex[:8]}")
    yield reg
    reg.deregister_project()


@pytest.fixture
def http_service(tmp_path) -> Iterator[tuple[subprocess.Popen, int]]:
    """A real HTTP server process whose GET /health answers 200."""
    (tmp_path / "health").write_text("ok\n")
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
         "--directory", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    wait_for(lambda: _answers(f"http://127.0.0.1:{port}/health"), 10, "http.server")
    yield server, port
    server.kill()
    server.wait()


@pytest.fixture
def grpc_service():
    """A real gRPC server with the standard health service; yields (port, servicer)."""
    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    yield port, servicer
    server.stop(grace=None)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _service(name: str, kind: str, port: int, health: dict | None = None, **extra) -> ServiceConfig:
    return ServiceConfig(
        name=name, kind=kind, path=f"services/{name}", port=port,
        health={**FAST_CHECKS, **(health or {})}, **extra,
    )


def _running(name: str, port: int) -> ServiceState:
    return ServiceState(service=name, state="running", address="127.0.0.1", port=port,
                        config_hash="c0ffee")


def _status(registry: Registry, name: str) -> str | None:
    entry = registry.health().get(name)
    return entry.status if entry else None


def test_ping_reports_the_leader(registry):
    assert ":" in registry.ping()


def test_http_check_passes_then_goes_critical_when_the_service_stops(registry, http_service):
    server, port = http_service
    svc = _service("users", "flask", port, tags=["http"])
    sid = registry.register(svc, _running("users", port), "local")
    assert sid == f"{registry.project}-users"

    wait_for(lambda: _status(registry, "users") == "passing", what="passing")
    entry = registry.health()["users"]
    assert (entry.address, entry.port) == ("127.0.0.1", port)
    assert entry.meta["project"] == registry.project and entry.meta["runtime"] == "local"
    assert entry.meta["config_hash"] == "c0ffee" and entry.meta["kind"] == "flask"
    [check] = entry.checks
    assert check.status == "passing" and f"http://127.0.0.1:{port}/health" in check.output

    # Consul's own view over its HTTP API agrees (not just our reading of it).
    raw = httpx.get(f"{registry.consul_http}/v1/agent/health/service/id/{sid}").json()
    assert raw["AggregatedStatus"] == "passing"
    assert raw["Service"]["Tags"] == ["http", "flask"]

    server.kill()
    server.wait()
    wait_for(lambda: _status(registry, "users") == "critical", 10, "critical after stop")
    assert registry.health()["users"].service_ids == (sid,), "critical services stay registered"


def test_grpc_check_follows_the_serving_status(registry, grpc_service):
    from grpc_health.v1 import health_pb2

    port, servicer = grpc_service
    registry.register(_service("inventory", "grpc", port), _running("inventory", port), "local")
    wait_for(lambda: _status(registry, "inventory") == "passing", what="grpc passing")
    servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    wait_for(lambda: _status(registry, "inventory") == "critical", what="grpc critical")


def test_registering_again_replaces_the_check(registry, http_service):
    _, port = http_service
    svc = _service("users", "flask", port)
    registry.register(svc, _running("users", port), "local")
    registry.register(svc, _running("users", port), "local")
    assert len(registry.health()["users"].checks) == 1


def test_deregister_project_leaves_nothing_and_spares_other_projects(consul_http, http_service):
    _, port = http_service
    ours = Registry(consul_http, f"a{uuid.uuid4().hex[:8]}")
    theirs = Registry(consul_http, f"b{uuid.uuid4().hex[:8]}")
    try:
        for name in ("users", "catalog"):
            ours.register(_service(name, "fastapi", port), _running(name, port), "local")
        theirs.register(_service("users", "flask", port), _running("users", port), "local")
        assert set(ours.health()) == {"users", "catalog"}

        removed = ours.deregister_project()
        assert sorted(removed) == [f"{ours.project}-catalog", f"{ours.project}-users"]
        assert ours.health() == {}
        agent = httpx.get(f"{consul_http}/v1/agent/services").json()
        assert not [s for s in agent.values() if s["Meta"].get("project") == ours.project]
        checks = httpx.get(f"{consul_http}/v1/agent/checks").json()
        assert not [c for c in checks.values() if c["ServiceID"].startswith(ours.project)]
        assert set(theirs.health()) == {"users"}
    finally:
        theirs.deregister_project()


def test_deregister_of_an_unknown_service_is_fine(registry):
    registry.deregister("never-registered")


def test_kv_lives_where_services_read_it(registry):
    from shopkit.settings import kv_prefix, read_kv

    registry.put_kv("payments/failure_rate", "0.5")
    registry.put_kv("_shared/jwt_secret", "s3cret")
    assert registry.get_kv("payments/failure_rate") == "0.5"
    assert registry.get_kv("payments/absent") is None
    assert registry.kv_tree() == {"payments/failure_rate": "0.5", "_shared/jwt_secret": "s3cret"}
    assert registry.kv_tree("payments/") == {"payments/failure_rate": "0.5"}

    addr = registry.consul_http.removeprefix("http://")
    assert read_kv(addr, kv_prefix(registry.project, "payments")) == {"failure_rate": "0.5"}
    assert read_kv(addr, kv_prefix(registry.project, "_shared")) == {"jwt_secret": "s3cret"}

    registry.delete_kv("", recurse=True)
    assert registry.kv_tree() == {}


def test_absent_keys_are_stored_in_transactions_and_present_ones_keep_their_value(registry):
    registry.put_kv("tea-urn/brew_seconds", "240")  # an operator's value, set at run time
    wanted = {"tea-urn/brew_seconds": "180", "tea-urn/cups": "[1, 2]",
              **{f"coat-check/hook_{n:03}": f"{n}" for n in range(70)}}  # over one txn's 64
    written = registry.put_kv_absent(wanted)
    assert sorted(written) == sorted(k for k in wanted if k != "tea-urn/brew_seconds")
    tree = registry.kv_tree()
    assert tree["tea-urn/brew_seconds"] == "240" and tree["tea-urn/cups"] == "[1, 2]"
    assert tree["coat-check/hook_069"] == "69" and len(tree) == len(wanted)
    assert registry.put_kv_absent(wanted) == []  # all present now: nothing changes
    assert registry.put_kv_absent({}) == []
    registry.delete_kv("", recurse=True)


def test_probe_performs_the_same_checks_directly(registry, http_service, grpc_service):
    _, http_port = http_service
    grpc_port, _ = grpc_service
    http = registry.probe(_running("users", http_port), _service("users", "flask", http_port))
    assert http.status == "passing" and http.latency_ms > 0 and "200 OK" in http.output
    grpc = registry.probe(_running("inv", grpc_port), _service("inv", "grpc", grpc_port))
    assert grpc.status == "passing" and "SERVING" in grpc.output
    missing = _service("users", "flask", http_port, health={"path": "/nope"})
    assert registry.probe(_running("users", http_port), missing).status == "critical"


def test_module_is_importable_without_grpc_loaded():
    """`shopctl` commands that never probe must not pay for importing grpc."""
    code = "import sys, shopctl.registry; print('grpc' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == "False"


def test_passing_instances_are_where_sagas_call_and_a_failing_one_drops_out(
        registry, http_service, grpc_service, tmp_path):
    """The saga's endpoints: a service whose check fails has no passing instance, so
    callers fall back to shop.yaml's port instead of an instance known to be down."""
    from grpc_health.v1 import health_pb2

    from shopctl.config import load_config
    from shopctl.saga.endpoints import discover

    _, http_port = http_service
    grpc_port, servicer = grpc_service
    registry.register(_service("shipping", "flask", http_port), _running("shipping", http_port),
                      "local")
    registry.register(_service("labels", "grpc", grpc_port), _running("labels", grpc_port),
                      "local")
    wait_for(lambda: set(registry.passing_instances()) == {"shipping", "labels"}, 10,
             "both passing")
    assert registry.passing_instances()["labels"] == [("127.0.0.1", grpc_port)]
    servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    wait_for(lambda: "labels" not in registry.passing_instances(), 10, "labels dropped")

    # discover() over the same agent: Consul's instance for shipping, shop.yaml's port
    # for labels, whose only instance fails its check.
    consul_port = urlsplit(registry.consul_http).port
    root = tmp_path
    for name in ("shipping", "labels"):
        (root / "services" / name).mkdir(parents=True)
    (root / "shop.yaml").write_text(
        f"project: {registry.project}\n"
        f"infra: {{consul: {{port: {consul_port}}}, rabbitmq: {{enabled: false}}}}\n"
        f"services:\n  shipping: {{kind: flask, port: 1}}\n  labels: {{kind: grpc, port: 2}}\n")
    endpoints = discover(load_config(root / "shop.yaml", {}))
    assert endpoints.to_dict()["addresses"] == {"shipping": [f"127.0.0.1:{http_port}"],
                                   "labels": ["127.0.0.1:2"]}
    assert endpoints.amqp is None
