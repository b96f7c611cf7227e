"""Fixtures of the orders tests: service modules, a private broker vhost, the service as
a real subprocess, and a tap on its events.

Module names: every service has top-level modules such as store.py, and all services'
tests can run in one pytest process, where `import store` would return whichever service
imported it first. So the pure modules are loaded from their files under unique names
(`orders_store`, `orders_health`) instead of putting the service folder on sys.path.

Broker isolation: nameko's queues are named after the service ("rpc-orders"), so two
orders processes on one vhost share requests. The test session therefore gets its own
vhost, made with rabbitmqctl and deleted afterwards, and runs one orders process at a
time (each test starts its own). Where rabbitmqctl cannot be used (not installed, no
permission) the tests fall back to the default vhost, after checking that no other
orders process consumes there. SHOP_TEST_AMQP_URI points the tests at another broker.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import kombu
import pytest

from shopctl.nameko_rpc import NamekoRpc
from shopctl.service_auth import Credentials

SERVICE_DIR = Path(__file__).resolve().parent.parent
BROKER = os.environ.get("SHOP_TEST_AMQP_URI", "amqp://guest:guest@127.0.0.1:5672/")
# The service key of every orders process the tests start (SHOP_SERVICE_KEY).
SERVICE_KEY = "orders-tests-" + uuid.uuid4().hex + uuid.uuid4().hex


def _load(alias: str, filename: str) -> None:
    spec = importlib.util.spec_from_file_location(alias, SERVICE_DIR / filename)
    module = importlib.util.module_from_spec(spec)
    sys.modules[alias] = module
    spec.loader.exec_module(module)


_load("orders_store", "store.py")
_load("orders_health", "health.py")


# -- broker ----------------------------------------------------------------------------

def _rabbitmqctl(*args: str) -> bool:
    try:
        done = subprocess.run(["rabbitmqctl", *args], capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def _with_vhost(uri: str, vhost: str) -> str:
    parts = urllib.parse.urlsplit(uri)
    return urllib.parse.urlunsplit(parts._replace(path="/" + urllib.parse.quote(vhost, safe="")))


def _assert_no_orders_consumer(uri: str) -> None:
    with kombu.Connection(uri) as conn:
        try:
            _, _, consumers = conn.default_channel.queue_declare("rpc-orders", passive=True)
        except conn.channel_errors:  # the queue does not exist: nobody serves orders here
            return
    if consumers:
        pytest.fail("another orders service consumes rpc-orders on the shared vhost; "
                    "stop it or make rabbitmqctl usable so the tests get their own vhost")


@pytest.fixture(scope="session")
def amqp_uri() -> str:
    """An AMQP URI on a vhost no other orders process uses."""
    user = urllib.parse.urlsplit(BROKER).username or "guest"
    vhost = f"shopctl-test-orders-{uuid.uuid4().hex[:8]}"
    if _rabbitmqctl("add_vhost", vhost):
        try:
            if not _rabbitmqctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*"):
                pytest.fail(f"could not grant {user} access to the test vhost {vhost}")
            yield _with_vhost(BROKER, vhost)
        finally:
            _rabbitmqctl("delete_vhost", vhost)
    else:
        _assert_no_orders_consumer(BROKER)
        yield BROKER


# -- the service as a subprocess -------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class OrdersProcess:
    """`python main.py` with its own port and data folder; stdout/stderr go to a file."""

    def __init__(self, data_dir: Path, amqp_uri: str, log_path: Path):
        self.data_dir = data_dir
        self.amqp_uri = amqp_uri
        self.log_path = log_path
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    def get(self, path: str) -> tuple[int, str]:
        """(status, body) of GET `path` on the service's HTTP port."""
        url = f"http://127.0.0.1:{self.port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def start(self) -> OrdersProcess:
        env = {**os.environ, "SHOP_SERVICE": "orders", "SHOP_HOST": "127.0.0.1",
               "SHOP_PORT": str(self.port), "SHOP_DATA_DIR": str(self.data_dir),
               "SHOP_AMQP_URI": self.amqp_uri, "SHOP_SERVICE_KEY": SERVICE_KEY}
        env.pop("CONSUL_HTTP_ADDR", None)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "main.py"], cwd=SERVICE_DIR,
                                         env=env, stdout=log, stderr=subprocess.STDOUT)
        return self

    def health(self) -> tuple[int, dict]:
        status, body = self.get("/health")
        return status, json.loads(body)

    def wait_healthy(self, limit: float = 30.0) -> None:
        deadline = time.monotonic() + limit
        while True:
            assert self.proc.poll() is None, f"orders exited early:\n{self.logs()}"
            try:
                if self.health()[0] == 200:
                    return
            except OSError:  # not listening yet
                pass
            assert time.monotonic() < deadline, f"orders never became healthy:\n{self.logs()}"
            time.sleep(0.1)

    def stop(self, sig: int = signal.SIGTERM, limit: float = 20.0) -> int:
        """Send `sig` and return the exit code (killing it if it does not exit)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=limit)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                pytest.fail(f"orders did not exit within {limit}s of {sig!r}")
        return self.proc.returncode

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def start_orders(tmp_path, amqp_uri):
    """start_orders(data_dir=None) -> a healthy OrdersProcess, stopped after the test."""
    started: list[OrdersProcess] = []

    def start(data_dir: Path | None = None) -> OrdersProcess:
        proc = OrdersProcess(data_dir or tmp_path / "data", amqp_uri,
                             tmp_path / f"orders-{len(started)}.log").start()
        started.append(proc)
        proc.wait_healthy()
        return proc

    yield start
    for proc in started:
        proc.stop(signal.SIGKILL)


# -- events ----------------------------------------------------------------------------

class EventTap:
    """Every event published on orders.events, from creation on, in arrival order.

    `drain(rpc)` publishes a barrier event through shopctl.nameko_rpc and returns (and
    forgets) what arrived before it. The service publishes each event (with broker
    confirms) before replying to the RPC that caused it, so once the barrier is in, every
    event of the calls made so far is in too, and any duplicate would be as well: no
    waiting for "nothing more arrives".
    """

    EXCHANGE = "orders.events"

    def __init__(self, amqp_uri: str):
        self.conn = kombu.Connection(amqp_uri)
        exchange = kombu.Exchange(self.EXCHANGE, type="topic", durable=True)
        queue = kombu.Queue(f"test-tap-{uuid.uuid4().hex}", exchange=exchange,
                            routing_key="#", exclusive=True)
        self.events: list[tuple[str, dict]] = []
        self.headers: list[dict] = []  # each event's AMQP headers, in arrival order
        self.consumer = kombu.Consumer(self.conn.channel(), queues=[queue], accept=["json"],
                                       callbacks=[self._on_message], no_ack=True)
        self.consumer.consume()

    def _on_message(self, body, message) -> None:
        self.events.append((message.delivery_info["routing_key"], body))
        self.headers.append(dict(message.headers or {}))

    def drain(self, rpc: NamekoRpc, limit: float = 15.0) -> list[tuple[str, dict]]:
        marker = uuid.uuid4().hex
        rpc.publish_event("orders", "test_barrier", {"barrier": marker})
        deadline = time.monotonic() + limit
        while ("test_barrier", {"barrier": marker}) not in self.events:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"the barrier event never arrived; got {self.events}"
            try:
                self.conn.drain_events(timeout=remaining)
            except TimeoutError:
                pass
        seen = [event for event in self.events if event[0] != "test_barrier"]
        self.events.clear()
        return seen

    def close(self) -> None:
        self.conn.release()


@pytest.fixture(scope="session")
def service_key() -> str:
    return SERVICE_KEY


@pytest.fixture
def rpc(amqp_uri):
    """An RPC client that sends a fresh credential for each call, scoped to the method,
    as the saga driver does."""
    with NamekoRpc(amqp_uri, timeout=10, credentials=Credentials(SERVICE_KEY, "tests")
                   ) as client:
        yield client


@pytest.fixture
def event_tap(amqp_uri):
    tap = EventTap(amqp_uri)
    yield tap
    tap.close()
