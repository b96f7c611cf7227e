"""Test helpers for shop services: run a service's main.py as a real process, and keep
each service's flat modules (app.py, store.py, ...) apart when many services' tests share
one interpreter.

Imported by tests only; it needs pytest and httpx, which services do not.
"""

from __future__ import annotations

import importlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import httpx
import pytest


def load_own_modules(service_dir: Path, names: tuple[str, ...]) -> dict[str, ModuleType]:
    """Import a service's top-level modules by name, from its folder only.

    Every service has an app.py or store.py, and `import app` in one interpreter can mean
    one file only. A service's conftest imports its modules once with this, then puts
    them back into sys.modules before each of its test modules is collected (in its
    pytest_pycollect_makemodule hook).
    """
    for name in names:
        sys.modules.pop(name, None)
    sys.path.insert(0, str(service_dir))
    try:
        return {name: importlib.import_module(name) for name in names}
    finally:
        sys.path.remove(str(service_dir))


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


def service_starter(workdir: Path, default_dir: Path) -> Iterator:
    """Body of a `start_service` fixture: yields start(service_dir=default_dir, **env)
    -> a healthy ServiceProcess, and kills whatever is still running afterwards."""
    started: list[ServiceProcess] = []

    def start(service_dir: Path = default_dir, **env: str) -> ServiceProcess:
        service = ServiceProcess(service_dir, workdir, env)
        started.append(service)
        service.wait_healthy()
        return service

    yield start
    for service in started:
        if service.proc.poll() is None:
            service.proc.kill()
            service.proc.wait()
