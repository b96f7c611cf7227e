"""Fixtures for the payments tests: in-process apps on a fresh store, and helpers to
read metrics and wait for conditions by polling.

Storage runs on both backends: `backend` is "sqlite" (a temp data folder) or
"postgresql" (a fresh database of the suite's real PostgreSQL server, tests.pgserver via
the root conftest's `pg_server`), so every test that asks for a store, directly or
through `make_client`/`client`, runs once on each."""

from __future__ import annotations

import base64
import json
import secrets
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest

SERVICE_DIR = Path(__file__).resolve().parents[1]
# The services share a flat module layout (app.py, config.py, ...). When several
# services' tests run in one pytest process, drop same-named modules another service
# imported first, so `import app` below means this service's app.
_OWN_MODULES = ("app", "breaker", "config", "db", "faults", "ledger", "main", "payments",
                "pgdb", "provider")
for _name in _OWN_MODULES:
    _module = sys.modules.get(_name)
    if _module is not None and Path(getattr(_module, "__file__", "") or "").parent != SERVICE_DIR:
        del sys.modules[_name]
sys.path.insert(0, str(SERVICE_DIR))

from app import create_app  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402
from shopkit.service_auth import ADMIN, HEADER, mint  # noqa: E402
from shopkit.settings import ServiceEnv  # noqa: E402

SERVICE = "payments"
# The service key of every payments the tests start (SHOP_SERVICE_KEY), and the scopes
# of its routes (app.py).
SERVICE_KEY = "payments-tests-" + secrets.token_hex(24)
SCOPES = ("charge", "refund", "get_charge", ADMIN)
BACKENDS = ("sqlite", "postgresql")


@pytest.fixture(scope="session")
def service_key() -> str:
    return SERVICE_KEY


@pytest.fixture(scope="session")
def credential() -> Callable[..., dict[str, str]]:
    """credential(*scopes, ttl=600) -> headers with a fresh service credential for
    payments granting `scopes` (default: every route's), as a calling service sends."""

    def headers(*scopes: str, ttl: int = 600) -> dict[str, str]:
        return {HEADER: mint(SERVICE_KEY, "tests", SERVICE, scopes or SCOPES, ttl)}

    return headers


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request) -> str:
    """Module-scoped, so a module's running services (module fixtures) can use it."""
    return request.param


def store_env(backend: str, folder: Path, pg_server=None) -> dict[str, str]:
    """The environment that gives a payments a fresh, empty store on `backend`: its data
    folder `folder` (created by the service), and for PostgreSQL a new database."""
    env = {"SHOP_DATA_DIR": str(folder)}
    if backend == "postgresql":
        env["SHOP_DATABASE_URL"] = pg_server.new_database()
    return env


@pytest.fixture
def new_store(backend: str, tmp_path: Path, request) -> Callable[[], dict[str, str]]:
    """new_store() -> the environment of another fresh store (see store_env)."""
    pg_server = request.getfixturevalue("pg_server") if backend == "postgresql" else None
    count = iter(range(1000))
    return lambda: store_env(backend, tmp_path / f"store-{next(count)}", pg_server)


@pytest.fixture(scope="module")
def module_store(backend: str, tmp_path_factory, request) -> dict[str, str]:
    """A fresh store for a module's running service (a module-scoped fixture's)."""
    pg_server = request.getfixturevalue("pg_server") if backend == "postgresql" else None
    return store_env(backend, tmp_path_factory.mktemp("store"), pg_server)


@pytest.fixture
def make_client(new_store, credential):
    """Build a started app; keyword arguments are settings (config.py), e.g.
    breaker_fail_max=3, passed the way the runtimes do: as environment variables. Every
    app of a test shares one store (a restart finds its data) unless the settings name
    another (shop_data_dir, shop_database_url: **new_store()). The client sends a service
    credential for every route with each request."""
    started: list[TestClient] = []
    store = new_store()

    def make(**settings: object) -> TestClient:
        environ = {"SHOP_SERVICE": SERVICE, **store, "SHOP_SERVICE_KEY": SERVICE_KEY}
        environ.update({key.upper(): str(value) for key, value in settings.items()})
        client = TestClient(create_app(ServiceEnv.from_environ(SERVICE, 0, environ)),
                            headers=credential())
        client.__enter__()  # runs the lifespan (KV watcher, shutdown of the provider pool)
        started.append(client)
        return client

    yield make
    for client in reversed(started):
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client) -> TestClient:
    return make_client()


def _metric(client: TestClient, name: str, **labels: str) -> float:
    """A sample's value from GET /metrics (0.0 when absent), labels matched as given."""
    wanted = {"service": SERVICE, **labels}
    total = 0.0
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in wanted.items()):
                total += sample.value
    return total


@pytest.fixture
def metric() -> Callable[..., float]:
    return _metric


def _wait_until(predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.02):
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout}s")
        time.sleep(interval)


@pytest.fixture
def wait_until() -> Callable[..., object]:
    return _wait_until


def _post_charge(client: TestClient, order_id: str, amount_cents: int, key: str | None = None,
                 **fields: object):
    headers = {"Idempotency-Key": key} if key else {}
    return client.post("/charges", json={"order_id": order_id, "amount_cents": amount_cents,
                                         **fields}, headers=headers)


def _post_refund(client: TestClient, order_id: str, key: str | None = None):
    headers = {"Idempotency-Key": key} if key else {}
    return client.post("/refunds", json={"order_id": order_id}, headers=headers)


@pytest.fixture
def post_charge() -> Callable[..., object]:
    """post_charge(client, order_id, amount_cents, key=None, **more_fields)"""
    return _post_charge


@pytest.fixture
def post_refund() -> Callable[..., object]:
    """post_refund(client, order_id, key=None)"""
    return _post_refund


class FakeConsul:
    """Just enough of Consul's KV HTTP API for shopkit.settings.read_kv, on 127.0.0.1."""

    def __init__(self) -> None:
        self.kv: dict[str, str] = {}
        self.reads = 0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                path = urlsplit(self.path).path
                prefix = path.removeprefix("/v1/kv/")
                entries = [
                    {"Key": key, "Value": base64.b64encode(value.encode()).decode()}
                    for key, value in sorted(fake.kv.items()) if key.startswith(prefix)
                ]
                fake.reads += 1
                body = json.dumps(entries).encode()
                self.send_response(200 if entries else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.addr = f"127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def fake_consul():
    consul = FakeConsul()
    yield consul
    consul.close()
