"""`shopctl dev` on both runtimes, against real containers, processes and Consul.

A fresh project (`shopctl init`) with two scaffolded services of different kinds; the
test edits the code the way a person does (a new route, a syntax error, its fix, an
editor's swap file, a requirements line) and checks what the running shop does.
"""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import docker
import httpx
import pytest

from shopctl.testing import wait_for
from tests.acceptance.test_shop_roundtrip import shopctl_in
from tests.acceptance.test_wheel_project import fresh_ports

pytestmark = [pytest.mark.consul, pytest.mark.rabbitmq]

EDITED, OTHER = "menu-board", "front-desk"  # fastapi, flask
ROUTE = '''
    @app.get("/dev-mark")
    def dev_mark() -> dict:
        return {{"mark": {mark}}}

    return app
'''


@pytest.fixture(params=["docker", "local"])
def project(request, tmp_path):
    root = tmp_path / "kiosk"
    made = shopctl_in(tmp_path, "init", str(root), "--name", f"dv{int(time.time() * 1000) % 10**8}")
    assert made.returncode == 0, made.stderr
    for name, kind in ((EDITED, "fastapi"), (OTHER, "flask")):
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


def base_url(data, name: str) -> str:
    return f"http://127.0.0.1:{data['services'][name]['port']}"


def instance_of(root: Path, runtime: str, project: str, name: str) -> str:
    """The container id, or the pid, serving `name` now."""
    if runtime == "docker":
        return docker.from_env().containers.get(f"shopctl-{project}-{name}").id
    record = json.loads((root / ".shopctl" / "local" / "run" / f"{name}.json").read_text())
    return str(record["child_pid"])


def add_route(root: Path, mark: int, broken: bool = False) -> None:
    app = root / "services" / EDITED / "app.py"
    text = app.read_text()
    head = text[:text.rindex("\n    return app")]
    if "/dev-mark" in head:
        head = head[:head.index('\n\n    @app.get("/dev-mark")')]
    app.write_text(head + "\n" + ROUTE.format(mark=mark) + ("    x = (\n" if broken else ""))


def test_a_saved_change_is_served_in_place_and_a_broken_one_is_reported(project):
    root, data, runtime = project
    dev = Dev(root, runtime)
    try:
        assert dev.next(600)["event"] == "watching"
        project_name = data["project"]
        edited_before = instance_of(root, runtime, project_name, EDITED)
        other_before = instance_of(root, runtime, project_name, OTHER)

        add_route(root, 1)
        event = dev.next()
        assert (event["service"], event["ok"], event["how"], event["files"]) == (
            EDITED, True, "restarted", ["app.py"])
        assert httpx.get(f"{base_url(data, EDITED)}/dev-mark", timeout=5).json() == {"mark": 1}
        if runtime == "docker":  # the same container took the code: no build, no recreate
            assert instance_of(root, runtime, project_name, EDITED) == edited_before

        add_route(root, 2, broken=True)
        event = dev.next()
        assert (event["service"], event["ok"]) == (EDITED, False)
        assert "crashed" in event["error"] or "stopped" in event["error"]
        assert any("SyntaxError" in line for line in event["log_tail"])
        # and the followed logs show the crash, prefixed by the service
        wait_for(lambda: any(line["service"] == EDITED and "SyntaxError" in line["text"]
                             for line in list(dev.log_lines)), 10, "the crash in the logs")
        # the other service never noticed
        assert httpx.get(f"{base_url(data, OTHER)}/health", timeout=5).status_code == 200
        assert instance_of(root, runtime, project_name, OTHER) == other_before

        add_route(root, 3)  # the next good save recovers it
        event = dev.next()
        assert (event["service"], event["ok"]) == (EDITED, True), event
        assert httpx.get(f"{base_url(data, EDITED)}/dev-mark", timeout=5).json() == {"mark": 3}

        service = root / "services" / EDITED
        (service / ".app.py.swp").write_bytes(b"vim swap")  # an editor's files: no reload
        (service / "app.py~").write_text("backup")
        (service / "__pycache__").mkdir(exist_ok=True)
        (service / "__pycache__" / "app.cpython-311.pyc").write_bytes(b"\0")
        assert dev.quiet_for(2.0)

        with open(root / "services" / OTHER / "requirements.txt", "a") as reqs:
            reqs.write("# pinned by the dev test\n")
        event = dev.next(600)
        assert (event["service"], event["how"], event["ok"]) == (OTHER, "rebuilt", True), event
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
    # docker: the container holds code its image lacks, so up rebuilds and replaces it;
    # local: the process already runs the files on disk.
    assert actions[EDITED] == ("recreate" if runtime == "docker" else "noop")
    assert actions[OTHER] == "noop"
    assert httpx.get(f"{base_url(data, EDITED)}/dev-mark", timeout=5).json() == {"mark": 3}


def test_dev_of_a_shop_without_services_says_how_to_add_one(tmp_path):
    made = shopctl_in(tmp_path, "init", str(tmp_path / "empty"), "--name", "dvempty")
    assert made.returncode == 0, made.stderr
    done = shopctl_in(tmp_path / "empty", "dev")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "no services to watch" in done.stderr and "scaffold new-service" in done.stderr
    assert not (tmp_path / "empty" / ".shopctl").exists()  # nothing was started
