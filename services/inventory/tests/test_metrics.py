"""Every RPC is counted on the Prometheus endpoint, by full method name and gRPC code."""

from __future__ import annotations

import urllib.request

import grpc
import inventory_pb2 as pb
import inventory_pb2_grpc as pb_grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

CHECK = "/shop.inventory.v1.Inventory/CheckStock"
RESERVE = "/shop.inventory.v1.Inventory/ReserveStock"


def request_counts(metrics_port: int) -> dict[tuple[str, str], float]:
    """{(endpoint, status): count} of the inventory service, read over HTTP."""
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    return {
        (s.labels["endpoint"], s.labels["status"]): s.value
        for family in text_string_to_metric_families(text)
        if family.name == "shop_requests"
        for s in family.samples
        if s.name == "shop_requests_total" and s.labels["service"] == "inventory"
    }


def test_metrics_endpoint_counts_rpcs_by_method_and_code(start_server, with_credentials):
    running = start_server(metrics_port=0)
    # The registry is process-wide, so compare against what earlier tests left there.
    before = request_counts(running.metrics_port)
    address = f"127.0.0.1:{running.port}"
    with grpc.insecure_channel(address) as bare, with_credentials(
            grpc.insecure_channel(address)) as chan:
        stub = pb_grpc.InventoryStub(chan)
        stub.CheckStock(pb.CheckStockRequest())
        stub.CheckStock(pb.CheckStockRequest())
        with pytest.raises(grpc.RpcError):
            stub.ReserveStock(pb.ReserveStockRequest(order_id="", items=[]))
        with pytest.raises(grpc.RpcError):  # refused for want of a credential
            pb_grpc.InventoryStub(bare).ReserveStock(pb.ReserveStockRequest(order_id="x"))

    after = request_counts(running.metrics_port)

    def delta(key):
        return after.get(key, 0) - before.get(key, 0)

    assert delta((CHECK, "OK")) == 2
    assert delta((RESERVE, "INVALID_ARGUMENT")) == 1
    assert delta((RESERVE, "UNAUTHENTICATED")) == 1
