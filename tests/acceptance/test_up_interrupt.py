"""Ctrl+C and SIGTERM during `shopctl up` (issue 12, item 7), docker runtime, a real
build interrupted:

- the first SIGINT stops the work: the build under way is cancelled and its container
  removed, nothing more starts, one line on stderr names what runs and `shopctl down`,
  exit 130 within 2 s of the signal, no traceback;
- a second SIGINT exits at once (well under a second), no traceback;
- SIGTERM does what the first SIGINT does, exit 143.

The build is made slow and recognisable: the copy's inventory/protogen.py (run by a
`RUN` step of its image) writes a file named by this test and sleeps, so the signal lands
while the engine runs that step in a container the test can find by its logs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import docker
import pytest
import yaml

from shopctl.testing import copy_demo_shop
from tests.acceptance.conftest import REPO
from tests.acceptance.test_shop_roundtrip import shopctl_in

SLOW_STEP_SECONDS = 120


class Up:
    """`shopctl up` running in a pipe, its stderr read as it comes."""

    def __init__(self, project: Path):
        env = {k: v for k, v in os.environ.items()
               if k not in ("SHOPCTL_FILE", "NO_COLOR", "FORCE_COLOR")}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "shopctl", "up", "--runtime", "docker"], cwd=project,
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self.err: list[str] = []
        self.out: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stderr, self.err), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stdout, self.out), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream, into: list[str]) -> None:
        for line in stream:
            into.append(line.rstrip("\n"))

    def wait_line(self, predicate, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.err):
                if predicate(line):
                    return line
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError("no such line; stderr so far:\n" + "\n".join(self.err))

    def exit_within(self, seconds: float) -> tuple[int, float]:
        """(exit code, seconds it took), the process killed if it took longer than 30 s."""
        start = time.monotonic()
        try:
            code = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"still running 30 s after the signal (allowed {seconds} s); "
                                 "stderr:\n" + "\n".join(self.err)) from None
        took = time.monotonic() - start
        for reader in self._readers:
            reader.join(timeout=5)
        return code, took

    def stderr(self) -> str:
        return "\n".join(self.err)


def marked_containers(client: docker.DockerClient, marker: str, running_only: bool) -> list[str]:
    """Ids of the build containers running this test's slow step: found by the file the
    step writes (`docker diff`; build containers keep no readable logs)."""
    out = []
    # The low-level list: containers come and go while it runs (other tests build too).
    for container in client.api.containers(all=not running_only):
        if "protogen.py" not in (container.get("Command") or ""):
            continue
        try:
            changes = client.api.diff(container["Id"]) or []
        except docker.errors.APIError:
            continue
        if any(change.get("Path") == f"/tmp/{marker}" for change in changes):
            out.append(container["Id"])
    return out


@pytest.fixture
def slow_build(tmp_path):
    """A copy of the demo shop whose inventory image build stalls in a RUN step; yields
    (project folder, marker, docker client); removes everything afterwards."""
    copy_demo_shop(REPO, tmp_path, prefix="i")
    marker = f"shopctl-interrupt-test-{uuid.uuid4().hex}"
    protogen = tmp_path / "services" / "inventory" / "protogen.py"
    main = 'if __name__ == "__main__":\n'
    text = protogen.read_text()
    assert main in text
    protogen.write_text(text.replace(main, main + (  # as the build's RUN step runs it
        f"    open('/tmp/{marker}', 'w').close()  # planted by test_up_interrupt\n"
        f"    __import__('time').sleep({SLOW_STEP_SECONDS})\n")))
    client = docker.from_env()
    yield tmp_path, marker, client
    for container in marked_containers(client, marker, running_only=False):
        try:
            client.api.remove_container(container, force=True)
        except docker.errors.APIError:
            pass
    shopctl_in(tmp_path, "down", "--volumes", "--rmi", "--runtime", "docker", timeout=300)


def in_slow_step(up: Up, client: docker.DockerClient, marker: str) -> str:
    """Wait until `up` builds the inventory image and the engine runs the slow step;
    returns that step's container id."""
    up.wait_line(lambda line: line.startswith("inventory") and "building image" in line, 300)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        found = marked_containers(client, marker, running_only=True)
        if found:
            return found[0]
        assert up.proc.poll() is None, "up ended before the slow step:\n" + up.stderr()
        time.sleep(0.2)
    raise AssertionError("the slow build step never ran; stderr:\n" + up.stderr())


def assert_clean_word(err: str, code_name: str) -> None:
    assert "Traceback" not in err, err
    assert "Exception ignored" not in err, err
    said = [line for line in err.splitlines() if line.startswith("interrupted:")]
    assert len(said) == 1, f"{code_name}: expected one 'interrupted:' line:\n{err}"
    assert "running now: " in said[0] and "consul" in said[0], said[0]
    assert "`shopctl down`" in said[0], said[0]


def gone(client: docker.DockerClient, container: str) -> bool:
    try:
        client.containers.get(container)
    except docker.errors.NotFound:
        return True
    return False


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)],
                         ids=["SIGINT", "SIGTERM"])
def test_a_signal_during_a_build_stops_it_says_what_runs_and_exits_fast(slow_build, sig, code):
    project, marker, client = slow_build
    up = Up(project)
    step = in_slow_step(up, client, marker)

    up.proc.send_signal(sig)
    exit_code, took = up.exit_within(2.0)

    err = up.stderr()
    assert exit_code == code, err
    assert took < 2.0, f"exited {took:.2f} s after the signal:\n{err}"
    assert_clean_word(err, sig.name)
    # The build was cancelled, not left to the engine: its step's container is gone, and
    # none of its steps runs or lies around later.
    assert gone(client, step), "the interrupted build step's container was left behind"
    time.sleep(2)
    assert marked_containers(client, marker, running_only=False) == []
    # Nothing was started after the signal: no service container of the project runs.
    services = client.containers.list(all=True, filters={"label": [
        f"io.shopctl.project={project_name(project)}", "io.shopctl.role=service"]})
    assert [c.name for c in services] == []


def test_a_second_sigint_exits_at_once(slow_build):
    project, marker, client = slow_build
    up = Up(project)
    in_slow_step(up, client, marker)

    up.proc.send_signal(signal.SIGINT)
    time.sleep(0.1)
    up.proc.send_signal(signal.SIGINT)
    exit_code, took = up.exit_within(1.0)

    err = up.stderr()
    assert exit_code == 130, err
    assert took < 1.0, f"exited {took:.2f} s after the second signal:\n{err}"
    assert "Traceback" not in err, err
    assert "Exception ignored" not in err, err


def project_name(project: Path) -> str:
    return yaml.safe_load((project / "shop.yaml").read_text())["project"]
