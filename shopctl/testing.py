"""Helpers for code that drives shopctl against real parts: the test suite and the
benchmarks in bench/. The CLI never imports this module.

It lives in the package, not in tests/ or bench/, because both of those use it and
neither should import the other. It needs nothing beyond shopctl's own dependencies.

- `free_ports(n)`: n distinct TCP ports free on 127.0.0.1 right now.
- `copy_demo_shop(source, dest, prefix)`: a private copy of the demo shop (unique project
  name, free host ports, 1s health intervals), so a run never meets a shop already
  running on the machine.
- `wait_for(condition, ...)`: poll until a condition holds, or fail with what was awaited.
"""

from __future__ import annotations

import shutil
import socket
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import yaml

# What a copy of services/ leaves out: caches, state, generated code and the tests.
IGNORE = shutil.ignore_patterns(
    "__pycache__", "data", "generated", ".pytest_cache", "*.egg-info", "tests"
)


def free_ports(count: int) -> list[int]:
    """`count` distinct ports that nothing listens on at 127.0.0.1 (a snapshot: all are
    held open together, then released, so no two are the same)."""
    socks, ports = [], []
    for _ in range(count):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        socks.append(sock)
        ports.append(sock.getsockname()[1])
    for sock in socks:
        sock.close()
    return ports


def copy_demo_shop(source: Path, dest: Path, prefix: str) -> dict:
    """Copy services/ and protos/ of the checkout `source` into `dest` and write
    dest/shop.yaml from source/shop.yaml with a unique project name (`prefix` and 8 hex
    digits), free host ports (Consul, RabbitMQ, PostgreSQL, every service's `port` and,
    where a service declares one, its `metrics_port`) and 1s health intervals; returns that
    shop.yaml's data. Everything else in shop.yaml is kept as it is."""
    for folder in ("services", "protos"):
        shutil.copytree(source / folder, dest / folder, ignore=IGNORE)
    data = yaml.safe_load((source / "shop.yaml").read_text())
    data["project"] = f"{prefix}{uuid.uuid4().hex[:8]}"
    services = data.get("services") or {}
    with_metrics = [svc for svc in services.values() if svc.get("metrics_port") is not None]
    ports = iter(free_ports(3 + len(services) + len(with_metrics)))
    data["infra"]["base_image"] = "shopctl/python:3.11"
    data["infra"]["consul"]["port"] = next(ports)
    data["infra"]["rabbitmq"]["port"] = next(ports)
    data["infra"].setdefault("postgres", {})["port"] = next(ports)
    for svc in services.values():
        svc["port"] = next(ports)
    for svc in with_metrics:
        svc["metrics_port"] = next(ports)
    for svc in services.values():
        svc.setdefault("health", {})["interval"] = "1s"
    (dest / "shop.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return data


def load_sibling(test_file: str, module: str, name: str):
    """The test module `module` (a file next to `test_file`) loaded by path under `name`,
    so its fixtures can be bound in another module (--import-mode=importlib puts no test
    folder on sys.path, so `import tests.integration...` is not reliable)."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location(name, Path(test_file).with_name(module))
    loaded = importlib.util.module_from_spec(spec)
    sys.modules[name] = loaded
    spec.loader.exec_module(loaded)
    return loaded


def wait_for(
    condition: Callable[[], object],
    timeout: float = 15.0,
    what: str = "condition",
    interval: float = 0.1,
):
    """The first truthy value of `condition()`, called every `interval` seconds;
    AssertionError naming `what` (and the last value seen) if there is none within
    `timeout` seconds."""
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"{what} not reached within {timeout}s; last: {value!r}")


def consul_headers(project_root: Path) -> dict[str, str]:
    """Headers that let a test read a project's Consul (it denies anonymous reads):
    the project's management token, as shopctl stored it."""
    from shopctl.state import ProjectState

    token_file = ProjectState(project_root).secrets_dir / "consul" / "management"
    return {"X-Consul-Token": token_file.read_text().strip()} if token_file.exists() else {}
