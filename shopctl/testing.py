"""Helpers for code that drives shopctl against real parts: the test suite and the
benchmarks in bench/. The CLI never imports this module.

It lives in the package, not in tests/ or bench/, because both of those use it and
neither should import the other. It needs nothing beyond shopctl's own dependencies.

- `free_ports(n)`: n distinct TCP ports free on 127.0.0.1 right now.
- `copy_demo_shop(source, dest, prefix)`: a private copy of the demo shop (unique project
  name, free host ports, 1s health intervals), so a run never meets a shop already
  running on the machine.
- `fresh_ports(root)`: point a project's shop.yaml at free ports, 1s health intervals.
- `wait_for(condition, ...)`: poll until a condition holds, or fail with what was awaited.
- `consul_services(...)`, `consul_status(...)`: what the project's Consul says of its
  services, asked over Consul's own HTTP API.
- `DevProcess`: `shopctl dev --json` running, its events read as they come.
- `Greeter`, `mark_greeting(...)`: call, and edit, the greeting handler every kind of
  scaffolded service has (templates/: FastAPI and Flask GET /hello, nameko RPC hello,
  gRPC SayHello), each over its own protocol.
"""

from __future__ import annotations

import re
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


def fresh_ports(root: Path) -> dict:
    """Point the project's infra and services at free ports (other shops may run here),
    with 1s health intervals; returns the shop.yaml data."""
    data = yaml.safe_load((root / "shop.yaml").read_text())
    ports = iter(free_ports(2 + 2 * len(data.get("services") or {})))
    data["infra"]["consul"]["port"] = next(ports)
    data["infra"]["rabbitmq"]["port"] = next(ports)
    for svc in (data.get("services") or {}).values():
        svc["port"] = next(ports)
        if "metrics_port" in svc:
            svc["metrics_port"] = next(ports)
        svc.setdefault("health", {})["interval"] = "1s"
    (root / "shop.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
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


def consul_status(port: int, project: str, root: Path, service: str,
                  timeout: float = 5) -> str | None:
    """The aggregated status of `service`'s instances of `project` in its Consul on
    127.0.0.1:`port` (passing, warning or critical), None when none is registered."""
    import httpx

    entries = httpx.get(f"http://127.0.0.1:{port}/v1/health/service/{service}",
                        headers=consul_headers(root), timeout=timeout).json()
    statuses = {check["Status"] for entry in entries
                if entry["Service"].get("Meta", {}).get("project") == project
                for check in entry["Checks"]}
    if not statuses:
        return None
    return "passing" if statuses == {"passing"} else (
        "critical" if "critical" in statuses else "warning")


def consul_services(port: int, project: str, root: Path) -> dict[str, str]:
    """{service: aggregated status} of the project's services, straight from Consul
    (with the project's management token: its Consul denies anonymous reads)."""
    import httpx

    names = httpx.get(f"http://127.0.0.1:{port}/v1/catalog/services",
                      headers=consul_headers(root), timeout=5).json()
    found = {name: consul_status(port, project, root, name) for name in names}
    return {name: status for name, status in found.items() if status is not None}


# What every kind's scaffolded greeting handler returns: f"{...greeting}, {who}", where
# `who` is "user SUB" (HTTP, the bearer token's subject) or the name it is given.
GREETING = re.compile(r"greeting\}(?: \(mark \d+\))?, ")
GREETING_FILES = {"fastapi": "app.py", "flask": "app.py", "nameko": "service.py",
                  "grpc": "server.py"}
GREETED = "dev"  # the name the RPC greetings are asked for
USER = "7"  # the user the HTTP greetings are asked for


def mark_greeting(service_dir: Path, kind: str, mark: int, broken: bool = False) -> Path:
    """Change what the scaffolded greeting handler of the `kind` service in
    `service_dir` returns: "hello (mark MARK), ..." (as a person edits one line);
    with `broken`, leave a syntax error at the end of the file too. Returns the file."""
    path = service_dir / GREETING_FILES[kind]
    text = path.read_text().replace("\n    x = (\n", "\n")
    text, count = GREETING.subn(f"greeting}} (mark {mark}), ", text)
    if count != 1:
        raise ValueError(f"no one greeting handler in {path} ({count} found)")
    path.write_text(text + ("\n    x = (\n" if broken else ""))
    return path


def user_token(root: Path, user: str = USER, ttl: int = 3600) -> str:
    """An access token for `user` as the project's HTTP services verify one (HS256 with
    the project's token secret)."""
    from shopctl.service_auth import sign
    from shopctl.state import ProjectState

    now = int(time.time())
    return sign(ProjectState(root).jwt_secret(),
                {"sub": user, "type": "access", "iat": now, "exp": now + ttl})


class Greeter:
    """Asks the scaffolded services of a running project (`data`: its shop.yaml) for
    their greeting, each over its kind's protocol: HTTP GET /hello with a user's token,
    nameko RPC `hello` on the project's broker, gRPC SayHello as protos/ declares it
    now (compiled again when a .proto changes)."""

    def __init__(self, root: Path, data: dict):
        from shopctl.broker import uri
        from shopctl.config import load_config
        from shopctl.state import ProjectState

        self.root, self.data = root, data
        config = load_config(root / "shop.yaml")
        self.amqp = uri(config, ProjectState(root).infra_host(), config.infra.rabbitmq.port)
        self.bearer = {"Authorization": f"Bearer {user_token(root)}"}
        self._protos: tuple[tuple, object] | None = None

    def kind(self, name: str) -> str:
        return self.data["services"][name]["kind"]

    def expected(self, name: str, mark: int | None = None) -> str:
        """The greeting `name` answers after mark_greeting(..., mark) (None: unedited)."""
        said = "hello" if mark is None else f"hello (mark {mark})"
        who = f"user {USER}" if self.kind(name) in ("fastapi", "flask") else GREETED
        return f"{said}, {who}"

    def greeting(self, name: str, timeout: float = 5) -> str:
        return self.hello(name, timeout)["message"]

    def hello(self, name: str, timeout: float = 5) -> dict:
        """The whole answer of `name`'s greeting handler, as a dict ("message": the
        greeting); raises what the call raises when the service does not answer."""
        port = self.data["services"][name]["port"]
        kind = self.kind(name)
        if kind in ("fastapi", "flask"):
            import httpx

            answer = httpx.get(f"http://127.0.0.1:{port}/hello", headers=self.bearer,
                               timeout=timeout)
            answer.raise_for_status()
            return answer.json()
        if kind == "nameko":
            from shopctl.nameko_rpc import NamekoRpc

            with NamekoRpc(self.amqp, timeout=timeout) as rpc:
                return {"message": rpc.call(name, "hello", GREETED)}
        import grpc

        method = self._protoset().find("SayHello", name)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_unary(method.full_name, method.input.SerializeToString,
                                       method.output.FromString)
            reply = call(method.input(name=GREETED), timeout=timeout)
        return {field.name: value for field, value in reply.ListFields()}

    def _protoset(self):
        from shopctl.saga.protos import ProtoSet

        folder = self.root / "protos"
        seen = tuple(sorted((p.name, p.stat().st_mtime_ns) for p in folder.rglob("*.proto")))
        if self._protos is None or self._protos[0] != seen:
            self._protos = (seen, ProtoSet(folder))
        return self._protos[1]


class DevProcess:
    """`shopctl dev --runtime RUNTIME --json [ARGS]` running in `root` (this Python's
    shopctl); its reload events come from `next()`, the followed log lines gather in
    `log_lines`."""

    def __init__(self, root: Path, runtime: str, *args: str):
        import os
        import queue
        import subprocess
        import sys
        import threading

        dropped = ("SHOPCTL_FILE", "NO_COLOR", "FORCE_COLOR")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "shopctl", "dev", "--runtime", runtime, "--json", *args],
            cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={k: v for k, v in os.environ.items() if k not in dropped})
        self._events: queue.Queue = queue.Queue()
        self.log_lines: list[dict] = []  # the watched services' logs, followed
        self.arrived = 0.0  # time.perf_counter() when the last event next() gave was read
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        import json

        for line in self.process.stdout:
            if line.startswith('{"event"'):
                self._events.put((time.perf_counter(), json.loads(line)))
            elif line.startswith('{"service"'):
                self.log_lines.append(json.loads(line))

    def next(self, timeout: float = 120) -> dict:
        """The next event line, as a dict; AssertionError if none comes in time."""
        import queue

        try:
            self.arrived, event = self._events.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("no event from shopctl dev in time") from None
        return event

    def quiet_for(self, seconds: float) -> bool:
        """Whether no event comes within `seconds`."""
        import queue

        try:
            self._events.get(timeout=seconds)
            return False
        except queue.Empty:
            return True

    def stop(self, timeout: float = 30) -> tuple[int, str]:
        """Ctrl+C, as a person stops it: (its exit status, its stderr)."""
        import signal

        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        _, err = self.process.communicate(timeout=timeout)
        return self.process.returncode, err
