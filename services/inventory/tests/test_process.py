"""main.py as the runtimes start it: a real process, checked over the network."""

from __future__ import annotations

import signal
import urllib.request

import grpc
import inventory_pb2 as pb
import inventory_pb2_grpc as pb_grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_main_serves_health_rpcs_and_metrics_then_exits_cleanly(service_process, signum):
    proc = service_process.proc
    # Retry connecting quickly while the process starts (grpc's default backoff is 1 s).
    options = [("grpc.initial_reconnect_backoff_ms", 50), ("grpc.max_reconnect_backoff_ms", 200)]
    with grpc.insecure_channel(f"127.0.0.1:{service_process.port}", options=options) as chan:
        try:
            grpc.channel_ready_future(chan).result(timeout=30)
        except grpc.FutureTimeoutError:
            proc.kill()
            pytest.fail(f"main.py never listened; its output:\n{proc.communicate()[0]}")
        health = health_pb2_grpc.HealthStub(chan).Check(
            health_pb2.HealthCheckRequest(service="shop.inventory.v1.Inventory"), timeout=5
        )
        levels = pb_grpc.InventoryStub(chan).CheckStock(pb.CheckStockRequest(), timeout=5).levels
    metrics_url = f"http://127.0.0.1:{service_process.metrics_port}/metrics"
    with urllib.request.urlopen(metrics_url, timeout=5) as resp:
        metrics = resp.read().decode()

    proc.send_signal(signum)
    output, _ = proc.communicate(timeout=30)

    assert health.status == health_pb2.HealthCheckResponse.SERVING
    assert len(levels) > 0
    assert 'endpoint="/shop.inventory.v1.Inventory/CheckStock",method="grpc"' in metrics
    assert proc.returncode == 0, output
    assert '"msg": "stopped"' in output
