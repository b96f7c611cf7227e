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
import time
from pathlib import Path

import docker
import pytest

from shopctl.testing import (
    GREETING_FILES,
    DevProcess,
    Greeter,
    consul_services,
    fresh_ports,
    mark_greeting,
    wait_for,
)
from tests.acceptance.test_shop_roundtrip import shopctl_in

pytestmark = [pytest.mark.consul, pytest.mark.rabbitmq]

# One service of each kind.
SERVICES = {"menu-board": "fastapi", "front-desk": "flask", "till-roll": "nameko",
            "price-tags": "grpc"}
EDITED = "menu-board"  # the one that also gets a syntax error
REBUILT = "front-desk"  # the one whose requirements.txt changes
GRPC = "price-tags"


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


def instance_of(root: Path, runtime: str, project: str, name: str) -> str:
    """The container id, or the pid, serving `name` now."""
    if runtime == "docker":
        return docker.from_env().containers.get(f"shopctl-{project}-{name}").id
    record = json.loads((root / ".shopctl" / "local" / "run" / f"{name}.json").read_text())
    return str(record["child_pid"])


def edit(root: Path, name: str, mark: int, broken: bool = False) -> None:
    """Change what `name`'s greeting handler returns (see mark_greeting)."""
    mark_greeting(root / "services" / name, SERVICES[name], mark, broken)


def consul(root: Path, data: dict) -> dict[str, str]:
    return consul_services(data["infra"]["consul"]["port"], data["project"], root)


def add_proto_field(root: Path, name: str) -> None:
    """A new field in the gRPC service's reply message and a handler that fills it, the
    handler saved first (it runs on the old stubs until the new ones are built)."""
    server = root / "services" / name / GREETING_FILES[SERVICES[name]]
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
    dev = DevProcess(root, runtime)
    try:
        assert dev.next(900)["event"] == "watching"
        shop = Greeter(root, data)
        name_of_project = data["project"]
        before = {name: instance_of(root, runtime, name_of_project, name) for name in SERVICES}
        assert {name: shop.greeting(name) for name in SERVICES} == {
            name: shop.expected(name, None) for name in SERVICES}

        for name in SERVICES:  # one handler of each kind, one after the other
            edit(root, name, 1)
            event = dev.next()
            assert (event["service"], event["ok"], event["how"], event["files"]) == (
                name, True, "restarted", [GREETING_FILES[SERVICES[name]]]), event
            assert shop.greeting(name) == shop.expected(name, 1)
            now = instance_of(root, runtime, name_of_project, name)
            if runtime == "docker":  # the same container took the code: no build, no recreate
                assert now == before[name], f"{name} was recreated"
            else:  # the process that serves it was restarted on the project's files
                assert now != before[name], f"{name} was not restarted"
                before[name] = now
            assert consul(root, data)[name] == "passing"
        assert set(consul(root, data).values()) == {"passing"}

        edit(root, EDITED, 2, broken=True)
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
                assert shop.greeting(name) == shop.expected(name, 1)
                assert instance_of(root, runtime, name_of_project, name) == before[name]

        edit(root, EDITED, 3)  # the next good save recovers it
        event = dev.next()
        assert (event["service"], event["ok"]) == (EDITED, True), event
        assert shop.greeting(EDITED) == shop.expected(EDITED, 3)
        assert consul(root, data)[EDITED] == "passing"

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
        assert shop.hello(GRPC) == {"message": shop.expected(GRPC, 1), "served_by": "dev"}
        assert consul(root, data)[GRPC] == "passing"

        with open(root / "services" / REBUILT / "requirements.txt", "a") as reqs:
            reqs.write("# pinned by the dev test\n")
        event = dev.next(600)
        assert (event["service"], event["how"], event["ok"]) == (REBUILT, "rebuilt", True), event
    finally:
        code, err = dev.stop()
    assert code == 0, err[-2000:]
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
        name: shop.expected(name, 3 if name == EDITED else 1) for name in SERVICES}
    assert set(consul(root, data).values()) == {"passing"}


def test_dev_of_a_shop_without_services_says_how_to_add_one(tmp_path):
    made = shopctl_in(tmp_path, "init", str(tmp_path / "empty"), "--name", "dvempty")
    assert made.returncode == 0, made.stderr
    done = shopctl_in(tmp_path / "empty", "dev")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "no services to watch" in done.stderr and "scaffold new-service" in done.stderr
    assert not (tmp_path / "empty" / ".shopctl").exists()  # nothing was started
