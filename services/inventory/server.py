"""Build, start and stop the inventory gRPC server.

`start()` opens the ledger, serves the Inventory service and the standard
grpc.health.v1.Health service (SERVING once the database is open) and, when asked,
Prometheus metrics over HTTP. Tests call it in-process with port=0; main.py calls it
with the service environment.

ReserveStock and ReleaseStock (and any method added to the service later) need a
service credential for this service (metadata x-shop-service-token, shopkit.grpc_kit)
with the scope named like the saga action: reserve_stock, release_stock; else
UNAUTHENTICATED or PERMISSION_DENIED. CheckStock, which only reads stock levels as a
shop shows them, and Health stay open.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from wsgiref.simple_server import WSGIServer

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from prometheus_client import start_http_server
from shopkit.grpc_kit import ServiceAuthInterceptor, protected_methods
from shopkit.metrics import observe
from shopkit.service_auth import Guard

from servicer import SERVICE_NAME, InventoryServicer, inventory_pb2, inventory_pb2_grpc
from stock import StockLedger

DB_FILE = "inventory.db"
# Every method needs a credential but these (read-only).
OPEN_METHODS = ("CheckStock",)
# What the lenient deserializer hands the handler for bytes that are no valid message.
MALFORMED = object()


def _lenient(deserialize):
    """A request deserializer that returns MALFORMED where grpcio would log a traceback
    and answer INTERNAL ("Exception deserializing request!"): the client sent bad bytes,
    which is INVALID_ARGUMENT, as for any other malformed request."""

    def parse(data: bytes):
        try:
            return deserialize(data)
        except DecodeError:
            return MALFORMED

    return parse


class MetricsInterceptor(grpc.ServerInterceptor):
    """Record every unary RPC in shopkit's request counter and latency histogram.

    endpoint = the full method name (/shop.inventory.v1.Inventory/ReserveStock),
    method = "grpc", status = the gRPC code name (OK, FAILED_PRECONDITION, ...).
    Streaming RPCs (only Health/Watch here) pass through unrecorded. Unary requests that
    do not parse are answered INVALID_ARGUMENT here (see _lenient).
    """

    def __init__(self, service: str):
        self._service = service

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        endpoint = handler_call_details.method
        behaviour = handler.unary_unary

        def recorded(request, context):
            start = time.perf_counter()
            failed = True
            try:
                if request is MALFORMED:
                    context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                  "malformed request: not a valid protobuf message")
                response = behaviour(request, context)
                failed = False
                return response
            finally:
                # An aborted RPC has its code set on the context before abort raises; any
                # other exception becomes UNKNOWN, as grpc reports it to the client.
                code = context.code() or (grpc.StatusCode.UNKNOWN if failed else grpc.StatusCode.OK)
                observe(self._service, endpoint, "grpc", code.name, time.perf_counter() - start)

        deserialize = handler.request_deserializer
        return grpc.unary_unary_rpc_method_handler(
            recorded,
            request_deserializer=_lenient(deserialize) if deserialize else None,
            response_serializer=handler.response_serializer,
        )


@dataclass
class InventoryServer:
    """A started server. `port` and `metrics_port` are the bound ones (never 0)."""

    port: int
    metrics_port: int | None
    grpc_server: grpc.Server
    health: health.HealthServicer
    ledger: StockLedger
    metrics_http: WSGIServer | None

    def stop(self, grace: float = 5.0) -> None:
        """NOT_SERVING first so health checks fail while in-flight RPCs get `grace` seconds
        to finish; then the metrics endpoint and the database close."""
        self.health.enter_graceful_shutdown()
        self.grpc_server.stop(grace).wait()
        if self.metrics_http is not None:
            self.metrics_http.shutdown()
            self.metrics_http.server_close()
        self.ledger.close()


def start(
    data_dir: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    metrics_port: int | None = None,
    service: str = "inventory",
    max_workers: int = 16,
    service_key: str | None = None,
) -> InventoryServer:
    """Serve on host:port (0 = any free port); metrics on metrics_port when not None.
    `service_key` checks the credentials of the guarded methods (RuntimeError without
    one)."""
    guard = Guard(service_key, service)
    scopes = protected_methods(inventory_pb2.DESCRIPTOR.services_by_name["Inventory"],
                               open=OPEN_METHODS)
    with ExitStack() as undo:  # unwinds only when a step fails; see pop_all below
        ledger = StockLedger.open(Path(data_dir) / DB_FILE)
        undo.callback(ledger.close)

        health_servicer = health.HealthServicer()
        # The database is open, so both the server as a whole ("") and the Inventory
        # service can serve.
        for name in ("", SERVICE_NAME):
            health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)

        server = grpc.server(
            ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="inventory-rpc"),
            # Metrics outermost: refused calls are counted by their code too.
            interceptors=[MetricsInterceptor(service), ServiceAuthInterceptor(guard, scopes)],
            # grpc enables SO_REUSEPORT by default: a second instance would then share
            # the port silently instead of failing to bind.
            options=[("grpc.so_reuseport", 0)],
        )
        inventory_pb2_grpc.add_InventoryServicer_to_server(InventoryServicer(ledger), server)
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        bound_port = server.add_insecure_port(_address(host, port))
        server.start()
        undo.callback(lambda: server.stop(None).wait())

        metrics_http = None
        if metrics_port is not None:
            metrics_http, _thread = start_http_server(metrics_port, addr=host)
        undo.pop_all()
    return InventoryServer(
        port=bound_port,
        metrics_port=metrics_http.server_port if metrics_http else None,
        grpc_server=server,
        health=health_servicer,
        ledger=ledger,
        metrics_http=metrics_http,
    )


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
