"""Fixtures: a real inventory gRPC server in the test process, and channels to it that
send a service credential with every call (as a calling service or shopctl does).

The service's modules are top-level (main.py runs from its own folder), so the service
dir goes on sys.path. Other services' tests do the same with modules of the same names
(`server`, ...); one imported earlier in the same pytest run is dropped from
sys.modules so that the imports below find ours.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import grpc
import pytest
from shopkit.grpc_kit import CredentialInterceptor
from shopkit.service_auth import Caller

SERVICE_DIR = Path(__file__).resolve().parents[1]
_OWN_MODULES = ("protogen", "stock", "servicer", "server")

sys.path.insert(0, str(SERVICE_DIR))
for _name in _OWN_MODULES:
    _module = sys.modules.get(_name)
    if _module is not None and Path(_module.__file__).parent != SERVICE_DIR:
        del sys.modules[_name]

import protogen  # noqa: E402
import server as inventory_server  # noqa: E402

inventory_pb2, inventory_pb2_grpc = protogen.load_stubs()
# The service key of every inventory server the tests start.
SERVICE_KEY = "inventory-tests-" + secrets.token_hex(24)


@pytest.fixture(scope="session")
def service_key() -> str:
    return SERVICE_KEY


@pytest.fixture(scope="session")
def with_credentials():
    """with_credentials(channel) -> the channel, sending a fresh credential for inventory
    with each call, its scope named after the method (ReserveStock -> reserve_stock)."""

    def wrap(channel: grpc.Channel) -> grpc.Channel:
        return grpc.intercept_channel(
            channel, CredentialInterceptor(Caller(SERVICE_KEY, "tests"), "inventory"))

    return wrap


def free_port() -> int:
    """A port that was free a moment ago, for programs that cannot bind port 0."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def start_server(data_dir: Path):
    """Start servers on `data_dir` (any free port); all are stopped at teardown (stopping
    a stopped server again is harmless)."""
    started = []

    def start(**kwargs) -> inventory_server.InventoryServer:
        running = inventory_server.start(data_dir, service_key=SERVICE_KEY, **kwargs)
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop(grace=0)


@pytest.fixture
def running(start_server) -> inventory_server.InventoryServer:
    return start_server()


@pytest.fixture
def channel(running, with_credentials):
    with with_credentials(grpc.insecure_channel(f"127.0.0.1:{running.port}")) as chan:
        yield chan


@pytest.fixture
def stub(channel):
    return inventory_pb2_grpc.InventoryStub(channel)


@pytest.fixture
def stock_of(stub):
    """stock_of(sku) -> (available, reserved), read over gRPC."""

    def read(sku: str) -> tuple[int, int]:
        (level,) = stub.CheckStock(inventory_pb2.CheckStockRequest(skus=[sku])).levels
        return level.available, level.reserved

    return read


@pytest.fixture
def service_process(tmp_path):
    """main.py started as the runtimes do (cwd = the service dir, env contract, no
    Consul), on free ports; killed at teardown if still alive."""
    port, metrics_port = free_port(), free_port()
    env = {
        **os.environ,
        "SHOP_HOST": "127.0.0.1",
        "SHOP_PORT": str(port),
        "SHOP_METRICS_PORT": str(metrics_port),
        "SHOP_DATA_DIR": str(tmp_path / "data"),
        "SHOP_SERVICE_KEY": SERVICE_KEY,
    }
    env.pop("CONSUL_HTTP_ADDR", None)
    env.pop("SHOP_PROTO_DIR", None)
    proc = subprocess.Popen(
        [sys.executable, "main.py"],
        cwd=SERVICE_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    yield SimpleNamespace(proc=proc, port=port, metrics_port=metrics_port)
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    proc.stdout.close()
