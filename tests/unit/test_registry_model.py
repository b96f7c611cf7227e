"""What the registry sends to Consul and how it reads answers, without an agent."""

from __future__ import annotations

import socket

import pytest

from shopctl.config import ServiceConfig
from shopctl.errors import OperationFailed, RuntimeUnavailable
from shopctl.registry import (
    Registry,
    check_definition,
    go_duration,
    probe,
    registration,
    service_id,
    worst,
)
from shopctl.units import ServiceState


def service(kind: str = "flask", **extra) -> ServiceConfig:
    fields = {"name": "users", "kind": kind, "path": "services/users", "port": 8001, **extra}
    return ServiceConfig(**fields)


def running(port: int = 8001, address: str | None = "10.0.0.5", **extra) -> ServiceState:
    return ServiceState(service="users", state="running", address=address, port=port, **extra)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens once the socket is closed


@pytest.mark.parametrize("kind", ["flask", "fastapi", "nameko"])
def test_http_kinds_get_an_http_check_on_their_health_path(kind):
    svc = service(kind, health={"path": "/ready", "interval": "1.5s", "timeout": "250ms"})
    check = check_definition(svc, "10.0.0.5", 8001)
    assert check["HTTP"] == "http://10.0.0.5:8001/ready"
    assert check["Interval"] == "1500ms" and check["Timeout"] == "250ms"
    assert "GRPC" not in check
    assert "DeregisterCriticalServiceAfter" not in check


def test_grpc_kind_gets_a_plaintext_grpc_check():
    check = check_definition(service("grpc", port=50051), "10.0.0.5", 50051)
    assert check["GRPC"] == "10.0.0.5:50051"
    assert check["GRPCUseTLS"] is False
    assert "HTTP" not in check


def test_registration_carries_id_tags_and_meta():
    svc = service(tags=["http", "auth", "flask"], metrics_port=9101)
    state = running(image="shopctl/users:abc", config_hash="f00d")
    reg = registration("shop", svc, state, "docker")
    assert reg["service_id"] == service_id("shop", "users") == "shop-users"
    assert reg["name"] == "users"
    assert (reg["address"], reg["port"]) == ("10.0.0.5", 8001)
    assert reg["tags"] == ["http", "auth", "flask"], "kind added once, order kept"
    assert reg["meta"] == {
        "project": "shop",
        "kind": "flask",
        "image": "shopctl/users:abc",
        "runtime": "docker",
        "config_hash": "f00d",
        "metrics_port": "9101",
        "metrics_path": "/metrics",
        "instance": "users",
    }
    assert all(isinstance(v, str) for v in reg["meta"].values()), "Consul meta is string->string"


def test_each_replica_registers_under_its_own_id_at_its_own_port():
    svc = service(metrics_port=9101)
    third = running(port=8001, address="127.0.0.1", index=3, extra={"metrics_port": "40123"})
    reg = registration("shop", svc, third, "local")
    assert reg["name"] == "users"  # callers ask Consul for the service's name
    assert reg["service_id"] == "shop-users.3" != registration("shop", svc, running(),
                                                                "local")["service_id"]
    assert reg["meta"]["instance"] == "users.3"
    assert reg["meta"]["metrics_port"] == "40123"  # Prometheus scrapes each replica


def test_registration_defaults_metrics_port_to_the_service_port():
    reg = registration("shop", service(), running(), "local")
    assert reg["meta"]["metrics_port"] == "8001"
    assert reg["meta"]["image"] == ""
    assert reg["tags"] == ["flask"]


def test_registration_without_address_is_refused():
    with pytest.raises(OperationFailed, match="no address"):
        registration("shop", service(), running(address=None), "docker")


def test_worst_status_wins():
    assert worst([]) == "passing"
    assert worst(["passing", "passing"]) == "passing"
    assert worst(["passing", "warning"]) == "warning"
    assert worst(["warning", "critical", "passing"]) == "critical"
    assert worst(["passing", "maintenance?"]) == "critical", "unknown never looks healthy"


def test_go_duration():
    assert go_duration(5) == "5000ms"
    assert go_duration(0.25) == "250ms"
    assert go_duration(0) == "1ms"


def test_unreachable_consul_is_runtime_unavailable():
    url = f"http://127.0.0.1:{closed_port()}"
    registry = Registry(url, "shop", timeout=1.0)
    with pytest.raises(RuntimeUnavailable) as caught:
        registry.ping()
    assert f"Consul is not reachable at {url}" in str(caught.value)
    assert "shopctl up" in str(caught.value) and "infra.consul.port" in str(caught.value)
    with pytest.raises(RuntimeUnavailable):
        registry.health()
    with pytest.raises(RuntimeUnavailable):
        registry.put_kv("users/x", "1")


def test_probe_of_a_stopped_service_is_critical_without_network():
    result = probe(ServiceState(service="users", state="exited", address=None), service())
    assert result.status == "critical"
    assert "not running" in result.output


def test_probe_of_a_closed_port_is_critical():
    port = closed_port()
    http = probe(running(port=port, address="127.0.0.1"), service(port=port), timeout=1.0)
    assert http.status == "critical" and "ConnectError" in http.output
    grpc = probe(running(port=port, address="127.0.0.1"), service("grpc", port=port), timeout=1.0)
    assert grpc.status == "critical" and "UNAVAILABLE" in grpc.output
