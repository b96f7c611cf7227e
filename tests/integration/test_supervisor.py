"""The supervisor process on its own: logging, restarts, stopping, dying, with real children."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from shopctl import testing
from shopctl.runtime.supervisor import MODULE, parse_line

REPO = Path(__file__).resolve().parents[2]


def wait_for(condition: Callable[[], object], timeout: float = 10.0, what: str = "condition"):
    """shopctl.testing.wait_for polling faster: a bare supervisor reacts within milliseconds."""
    return testing.wait_for(condition, timeout, what, interval=0.05)


def running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class Harness:
    """Writes a spec for a Python snippet and runs a supervisor for it (not detached)."""

    def __init__(self, tmp_path: Path):
        self.tmp = tmp_path
        self.state = tmp_path / "unit.json"
        self.log = tmp_path / "unit.log"
        self.proc: subprocess.Popen | None = None

    def start(self, code: str, **spec_extra) -> subprocess.Popen:
        spec = {
            "unit": "unit", "role": "service", "project": "t", "launch_id": "l1",
            "argv": [sys.executable, "-u", "-c", code], "cwd": str(self.tmp),
            "env": {**os.environ}, "log": str(self.log), "state": str(self.state),
            "config_hash": "h", "grace": 2.0,
            "backoff": {"initial": 0.2, "max": 1.0, "reset_after": 30},
            **spec_extra,
        }
        (self.tmp / "spec.json").write_text(json.dumps(spec))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", MODULE, str(self.tmp / "spec.json")], cwd=REPO,
            start_new_session=True,
        )
        return self.proc

    def record(self) -> dict:
        try:
            return json.loads(self.state.read_text())
        except (FileNotFoundError, ValueError):
            return {}

    def log_text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def lines(self) -> list[str]:
        return [parse_line(line)[1] for line in self.log_text().splitlines()]

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=15)


@pytest.fixture
def harness(tmp_path):
    h = Harness(tmp_path)
    yield h
    if h.proc is not None and h.proc.poll() is None:
        h.proc.kill()
        h.proc.wait()


def test_output_is_timestamped_and_stop_is_clean(harness):
    harness.start(
        "import sys,time\n"
        "print('to stdout'); print('to stderr', file=sys.stderr)\n"
        "sys.stdout.write('no newline yet'); sys.stdout.flush()\n"
        "time.sleep(60)\n"
    )
    wait_for(lambda: "to stderr" in harness.lines(), what="output in log")
    record = harness.record()
    assert record["state"] == "running" and record["child_pid"] and record["restarts"] == 0
    child = record["child_pid"]
    assert harness.stop() == 0
    assert not running(child)
    raw = harness.log.read_text().splitlines()
    assert all(parse_line(line)[0] is not None for line in raw), "every line has a stamp"
    lines = harness.lines()
    assert "to stdout" in lines and "to stderr" in lines
    assert "no newline yet" in lines, "a partial line is flushed when the child ends"
    assert lines[-1] == "[shopctl] stopped (killed by SIGTERM (exit 143))"
    final = harness.record()
    assert final["state"] == "exited" and final["child_pid"] is None
    assert final["last_exit_code"] == 143


def test_child_ignoring_sigterm_is_killed_after_the_grace(harness):
    harness.start(
        "import signal,time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('ready', flush=True); time.sleep(60)\n",
        grace=0.5,
    )
    wait_for(lambda: "ready" in harness.lines(), what="ready")
    started = time.monotonic()
    harness.stop()
    assert time.monotonic() - started < 5
    assert any("sending SIGKILL" in line for line in harness.lines())
    assert harness.record()["last_exit_code"] == 137


def test_a_chatty_shutdown_is_not_mistaken_for_a_hang(harness):
    """A child logging more than a pipe holds while it stops must still stop cleanly."""
    harness.start(
        "import signal,sys,time\n"
        "def bye(*_):\n"
        "    for i in range(5000): print('draining', i, 'x' * 60)\n"
        "    sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, bye)\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n",
        grace=3.0,
    )
    wait_for(lambda: "ready" in harness.lines(), what="ready")
    harness.stop()
    lines = harness.lines()
    assert not any("sending SIGKILL" in line for line in lines)
    assert harness.record()["last_exit_code"] == 0
    assert sum(line.startswith("draining") for line in lines) == 5000


def test_crashes_are_restarted_with_growing_backoff(harness):
    harness.start("import sys; print('boom', flush=True); sys.exit(3)")
    wait_for(lambda: harness.record().get("restarts", 0) >= 3, what="three restarts")
    record = harness.record()
    assert record["last_exit_code"] == 3
    notes = [line for line in harness.lines() if "restarting in" in line]
    assert notes[:3] == [
        "[shopctl] exit code 3; restarting in 0.2s",
        "[shopctl] exit code 3; restarting in 0.4s",
        "[shopctl] exit code 3; restarting in 0.8s",
    ]
    assert harness.lines().count("boom") >= 3
    harness.stop()


def test_killed_child_is_a_crash(harness):
    harness.start("import time; print('up', flush=True); time.sleep(60)")
    first = wait_for(lambda: harness.record().get("child_pid"), what="child")
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: harness.record().get("restarts") == 1 and harness.record()["child_pid"],
             what="restart")
    record = harness.record()
    assert record["child_pid"] != first and record["last_exit_code"] == 137
    assert "[shopctl] killed by SIGKILL (exit 137); restarting in 0.2s" in harness.lines()
    harness.stop()


def test_killing_the_supervisor_kills_the_child(harness):
    harness.start("import time; time.sleep(60)")
    child = wait_for(lambda: harness.record().get("child_pid"), what="child")
    harness.proc.kill()
    harness.proc.wait()
    wait_for(lambda: not running(child), 5, "child gone with its supervisor")


def test_a_command_that_cannot_run_is_reported_once(harness):
    harness.start("", argv=["/nonexistent/binary"])
    assert harness.proc.wait(timeout=10) == 1
    record = harness.record()
    assert record["state"] == "exited" and record["restarts"] == 0
    assert "cannot start /nonexistent/binary" in record["error"]
