"""`shopctl dev` on both runtimes, against real containers, processes, RabbitMQ and Consul.

A fresh project (`shopctl init`) with one scaffolded service of each kind (FastAPI,
Flask, nameko, gRPC); the test edits the code the way a person does (what a handler
returns, a syntax error and its fix, an editor's swap file, a requirements line, a new
field in a .proto) and checks what the running shop does: the new answer is served by
the same container (docker) or by the restarted process (local), Consul passes the
service again, the other services never notice.
"""

from __future__ import annotations

import json
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import docker
import grpc
import httpx
import jwt
import pytest

from shopctl.config import load_config
from shopctl.nameko_rpc import NamekoRpc
from shopctl.saga.endpoints import discover
from shopctl.saga.protos import ProtoSet
from shopctl.state import ProjectState
from shopctl.testing import wait_for
from tests.acceptance.test_shop_roundtrip import consul_services, shopctl_in
from tests.acceptance.test_wheel_project import fresh_ports

pytestmark = [pytest.mark.consul, pytest.mark.rabbitmq]

# One service of each kind; the file holding each one's greeting handler.
SERVICES = {"menu-board": "fastapi", "front-desk": "flask", "till-roll": "nameko",
            "price-tags": "grpc"}
HANDLER_FILE = {"fastapi": "app.py", "flask": "app.py", "nameko": "service.py",
                "grpc": "server.py"}
EDITED = "menu-board"  # the one that also gets a syntax error
REBUILT = "front-desk"  # the one whose requirements.txt changes
GRPC = "price-tags"
# Every kind's greeting handler returns f"{...greeting}, {who}"; an edit marks it.
GREETING = re.compile(r"greeting\}(?: \(mark \d+\))?, ")


@pytest.fixture(params=["docker", "local"])
def project(request, tmp_path):
    root = tmp_path / "kiosk"
    made = shopctl_in(tmp_path, "init", str(root), "--name", f"dv{int(time.time() * 1000) % 10**8}")
    assert made.returncode == 0, made.stderr
    for name, kind in SERVICES.items():
        done = shopctl_in(root, "scaffold", "new-service", name, "--kind", kind)
        assert done.returncode == 0, done.stderr
    data = fresh_ports(root)
    yield root, data, request.param
    shopctl_in(root, "down", "--volumes", "--rmi", "--runtime", request.param, timeout=180)


class Dev:
    """`shopctl dev --json` running; its JSON lines arrive in `events`."""

    def __init__(self, root: Path, runtime: str):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "shopctl", "dev", "--runtime", runtime, "--json"],
            cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.events: queue.Queue = queue.Queue()
        self.log_lines: list[dict] = []  # the watched services' logs, followed
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            if line.startswith('{"event"'):
                self.events.put(json.loads(line))
            elif line.startswith('{"service"'):
                self.log_lines.append(json.loads(line))

    def next(self, timeout: float = 120) -> dict:
        try:
            return self.events.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("no event from shopctl dev in time") from None

    def quiet_for(self, seconds: float) -> bool:
        try:
            self.events.get(timeout=seconds)
            return False
        except queue.Empty:
            return True


class Shop:
    """Asks each service of the running project its greeting, the way its kind is called."""

    def __init__(self, root: Path, data: dict):
        self.root, self.data = root, data
        self.amqp = discover(load_config(root / "shop.yaml")).amqp
        secret = ProjectState(root).jwt_secret()
        self.bearer = {"Authorization": "Bearer " + jwt.encode(
            {"sub": "7", "type": "access", "exp": int(time.time()) + 3600}, secret,
            algorithm="HS256")}

    def port(self, name: str) -> int:
        return self.data["services"][name]["port"]

    def greeting(self, name: str) -> str:
        return self.hello(name)[0]

    def hello(self, name: str) -> tuple[str, dict]:
        """(the greeting, the whole answer) of `name`'s greeting handler."""
        kind = SERVICES[name]
        if kind in ("fastapi", "flask"):
            answer = httpx.get(f"http://127.0.0.1:{self.port(name)}/hello", timeout=5,
                               headers=self.bearer).json()
            return answer["message"], answer
        if kind == "nameko":
            with NamekoRpc(self.amqp, timeout=10) as rpc:
                answer = rpc.call(name, "hello", "dev")
            return answer, {"message": answer}
        # The .proto as it is now (a test may have changed it), compiled afresh.
        method = ProtoSet(self.root / "protos").find("SayHello", name)
        with grpc.insecure_channel(f"127.0.0.1:{self.port(name)}") as channel:
            call = channel.unary_unary(method.full_name, method.input.SerializeToString,
                                       method.output.FromString)
            reply = call(method.input(name="dev"), timeout=5)
        fields = {field.name: value for field, value in reply.ListFields()}
        return reply.message, fields

    def consul(self) -> dict[str, str]:
        return consul_services(self.data["infra"]["consul"]["port"], self.data["project"],
                               self.root)


def expected(name: str, mark: int | None) -> str:
    marked = "hello" if mark is None else f"hello (mark {mark})"
    return f"{marked}, user 7" if SERVICES[name] in ("fastapi", "flask") else f"{marked}, dev"


def instance_of(root: Path, runtime: str, project: str, name: str) -> str:
    """The container id, or the pid, serving `name` now."""
    if runtime == "docker":
        return docker.from_env().containers.get(f"shopctl-{project}-{name}").id
    record = json.loads((root / ".shopctl" / "local" / "run" / f"{name}.json").read_text())
    return str(record["child_pid"])


def handler_file(root: Path, name: str) -> Path:
    return root / "services" / name / HANDLER_FILE[SERVICES[name]]


def mark_greeting(root: Path, name: str, mark: int, broken: bool = False) -> None:
    """Change what `name`'s greeting handler returns (one line of its own file); with
    `broken`, leave a syntax error at the end of the file too."""
    path = handler_file(root, name)
    text = path.read_text().replace("\n    x = (\n", "\n")
    text, count = GREETING.subn(f"greeting}} (mark {mark}), ", text)
    assert count == 1, f"the greeting handler of {name} was not found in {path}"
    path.write_text(text + ("\n    x = (\n" if broken else ""))


def add_proto_field(root: Path, name: str) -> None:
    """A new field in the gRPC service's reply message and a handler that fills it, the
    handler saved first (it runs on the old stubs until the new ones are built)."""
    server = handler_file(root, name)
    text = server.read_text()
    old = "return pb2.SayHelloResponse(message="
    assert text.count(old) == 1
    server.write_text(text.replace(old, 'return pb2.SayHelloResponse(served_by="dev", message='))
    proto = root / "protos" / f"{name}.proto"
    text = proto.read_text()
    old = "message SayHelloResponse {\n  string message = 1;\n"
    assert old in text
    proto.write_text(text.replace(old, old + "  string served_by = 2;\n"))


def test_a_saved_change_is_served_in_place_for_every_kind_and_a_broken_one_is_reported(project):
    root, data, runtime = project
    dev = Dev(root, runtime)
    try:
        assert dev.next(900)["event"] == "watching"
        shop = Shop(root, data)
        name_of_project = data["project"]
        before = {name: instance_of(root, runtime, name_of_project, name) for name in SERVICES}
        assert {name: shop.greeting(name) for name in SERVICES} == {
            name: expected(name, None) for name in SERVICES}

        for name in SERVICES:  # one handler of each kind, one after the other
            mark_greeting(root, name, 1)
            event = dev.next()
            assert (event["service"], event["ok"], event["how"], event["files"]) == (
                name, True, "restarted", [HANDLER_FILE[SERVICES[name]]]), event
            assert shop.greeting(name) == expected(name, 1)
            now = instance_of(root, runtime, name_of_project, name)
            if runtime == "docker":  # the same container took the code: no build, no recreate
                assert now == before[name], f"{name} was recreated"
            else:  # the process that serves it was restarted on the project's files
                assert now != before[name], f"{name} was not restarted"
                before[name] = now
            assert shop.consul()[name] == "passing"
        assert set(shop.consul().values()) == {"passing"}

        mark_greeting(root, EDITED, 2, broken=True)
        event = dev.next()
        assert (event["service"], event["ok"]) == (EDITED, False)
        assert "crashed" in event["error"] or "stopped" in event["error"]
        assert any("SyntaxError" in line for line in event["log_tail"])
        # and the followed logs show the crash, prefixed by the service
        wait_for(lambda: any(line["service"] == EDITED and "SyntaxError" in line["text"]
                             for line in list(dev.log_lines)), 10, "the crash in the logs")
        # the other services never noticed
        for name in SERVICES:
            if name != EDITED:
                assert shop.greeting(name) == expected(name, 1)
                assert instance_of(root, runtime, name_of_project, name) == before[name]

        mark_greeting(root, EDITED, 3)  # the next good save recovers it
        event = dev.next()
        assert (event["service"], event["ok"]) == (EDITED, True), event
        assert shop.greeting(EDITED) == expected(EDITED, 3)
        assert shop.consul()[EDITED] == "passing"

        service = root / "services" / EDITED
        (service / ".app.py.swp").write_bytes(b"vim swap")  # an editor's files: no reload
        (service / "app.py~").write_text("backup")
        (service / "__pycache__").mkdir(exist_ok=True)
        (service / "__pycache__" / "app.cpython-311.pyc").write_bytes(b"\0")
        assert dev.quiet_for(2.0)

        # A new field in a .proto: the stubs are built anew (through `up`), and the
        # handler that fills it serves it.
        add_proto_field(root, GRPC)
        event = dev.next(600)
        while event["how"] != "rebuilt":  # the handler alone first, if saved apart
            assert (event["service"], event["ok"]) == (GRPC, True), event
            event = dev.next(600)
        assert (event["service"], event["ok"]) == (GRPC, True), event
        assert f"protos/{GRPC}.proto" in event["files"]
        assert shop.hello(GRPC)[1] == {"message": expected(GRPC, 1), "served_by": "dev"}
        assert shop.consul()[GRPC] == "passing"

        with open(root / "services" / REBUILT / "requirements.txt", "a") as reqs:
            reqs.write("# pinned by the dev test\n")
        event = dev.next(600)
        assert (event["service"], event["how"], event["ok"]) == (REBUILT, "rebuilt", True), event
    finally:
        dev.process.send_signal(signal.SIGINT)
        out, err = dev.process.communicate(timeout=30)
    assert dev.process.returncode == 0, err[-2000:]
    assert "stopped watching; the shop keeps running" in err

    status = shopctl_in(root, "status", "--runtime", runtime, "--json")
    assert status.returncode == 0, status.stdout[-1000:]
    up = shopctl_in(root, "up", "--runtime", runtime, "--json")
    assert up.returncode == 0, up.stderr[-2000:]
    actions = {step["service"]: step["action"] for step in json.loads(up.stdout)["plan"]}
    # docker: a container that holds code its image lacks is rebuilt and replaced; one
    # that went through `up` under dev (a .proto, a requirements line) is up to date.
    # local: each process already runs the files on disk.
    in_place = "recreate" if runtime == "docker" else "noop"
    assert actions == {EDITED: in_place, "till-roll": in_place, GRPC: "noop",
                       REBUILT: "noop"}
    assert {name: shop.greeting(name) for name in SERVICES} == {
        name: expected(name, 3 if name == EDITED else 1) for name in SERVICES}
    assert set(shop.consul().values()) == {"passing"}


def test_dev_of_a_shop_without_services_says_how_to_add_one(tmp_path):
    made = shopctl_in(tmp_path, "init", str(tmp_path / "empty"), "--name", "dvempty")
    assert made.returncode == 0, made.stderr
    done = shopctl_in(tmp_path / "empty", "dev")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "no services to watch" in done.stderr and "scaffold new-service" in done.stderr
    assert not (tmp_path / "empty" / ".shopctl").exists()  # nothing was started
