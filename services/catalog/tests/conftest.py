"""Fixtures of the catalog tests: an app on a temp data dir, tokens, and services run
as real subprocesses (main.py)."""

from __future__ import annotations

import importlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import httpx
import jwt
import pytest
from fastapi.testclient import TestClient

SERVICE_DIR = Path(__file__).resolve().parents[1]
# Other services have modules with these names too (app.py, store.py, ...), and a
# whole-repo pytest run imports every service's tests into one interpreter, where
# `import app` can mean only one file. So ours are imported once, here, and put back
# into sys.modules before each test module of this folder is imported.
OWN_MODULE_NAMES = ("app", "store", "models")


def _import_own_modules() -> dict[str, ModuleType]:
    for name in OWN_MODULE_NAMES:
        sys.modules.pop(name, None)
    sys.path.insert(0, str(SERVICE_DIR))
    try:
        return {name: importlib.import_module(name) for name in OWN_MODULE_NAMES}
    finally:
        sys.path.remove(str(SERVICE_DIR))


OWN_MODULES = _import_own_modules()


def pytest_pycollect_makemodule(module_path, parent):
    """Runs before pytest imports a test module of this folder: make it see our modules."""
    sys.modules.update(OWN_MODULES)


from app import create_app  # noqa: E402


@pytest.fixture
def secret() -> str:
    return secrets.token_urlsafe(32)


@pytest.fixture
def data_dir(tmp_path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def app(data_dir, secret):
    return create_app(data_dir, secret)


@pytest.fixture
def client(app):
    return TestClient(app)


@pytest.fixture
def make_token(secret):
    """make_token(ttl=300, secret=<the app's>, **claims): an access token shaped like
    the ones users issues (HS256; sub, type, iat, exp)."""

    def make(ttl: int = 300, secret: str = secret, **claims) -> str:
        now = int(time.time())
        payload = {"sub": "1", "type": "access", "iat": now, "exp": now + ttl, **claims}
        return jwt.encode(payload, secret, algorithm="HS256")

    return make


@pytest.fixture
def auth(make_token) -> dict[str, str]:
    """Headers with a valid access token."""
    return {"Authorization": f"Bearer {make_token()}"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServiceProcess:
    """A service's main.py running as a real process on a free local port."""

    def __init__(self, service_dir: Path, workdir: Path, extra_env: dict[str, str]):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / f"{service_dir.name}-{self.port}.log"
        # No Consul in tests: the service must run on the environment alone.
        env = {k: v for k, v in os.environ.items() if k != "CONSUL_HTTP_ADDR"}
        env.update(SHOP_HOST="127.0.0.1", SHOP_DATA_DIR=str(workdir / service_dir.name))
        env.update(extra_env, SHOP_PORT=str(self.port))
        self.data_dir = Path(env["SHOP_DATA_DIR"])
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "main.py"],
                cwd=service_dir,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_healthy(self, timeout: float = 30.0) -> httpx.Response:
        """Poll GET /health until it answers 200; fail with the logs if it never does."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"service exited with {self.proc.returncode}:\n{self.logs()}")
            try:
                resp = httpx.get(f"{self.url}/health", timeout=2.0)
                if resp.status_code == 200:
                    return resp
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        pytest.fail(f"service not healthy after {timeout}s:\n{self.logs()}")

    def terminate(self, timeout: float = 15.0) -> int:
        """Send SIGTERM and return the exit code (killing it if it hangs)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"no exit within {timeout}s of SIGTERM:\n{self.logs()}")


@pytest.fixture
def start_service(tmp_path):
    """Factory: start_service(service_dir, **env) -> a healthy ServiceProcess."""
    started: list[ServiceProcess] = []

    def start(service_dir: Path = SERVICE_DIR, **env: str) -> ServiceProcess:
        service = ServiceProcess(service_dir, tmp_path, env)
        started.append(service)
        service.wait_healthy()
        return service

    yield start
    for service in started:
        if service.proc.poll() is None:
            service.proc.kill()
            service.proc.wait()
