"""The saga worker's heartbeat as `status` reads it, and the line status prints for it."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from shopctl.cli.render import worker_line
from shopctl.config.model import ShopConfig
from shopctl.saga import owner
from shopctl.saga.worker import Heartbeat, WorkerStatus, observe, stop
from shopctl.state import ProjectState


def config_in(tmp_path, enabled: bool = True) -> ShopConfig:
    config = ShopConfig.model_validate({"project": "p", "saga_worker": {"enabled": enabled}})
    return config.attach(tmp_path / "shop.yaml")


def beat(state, token: str, *, last_pass_ago: float | None, interval: float = 1.0) -> None:
    now = time.time()
    Heartbeat(token, "d", now - 100, interval, managed=True,
              last_pass_at=None if last_pass_ago is None else now - last_pass_ago,
              passes=3, resumed=2, retried=1).write(state)


@pytest.fixture
def project(tmp_path):
    config = config_in(tmp_path)
    state = ProjectState(tmp_path)
    state.ensure(state.dir)
    return config, state


def test_a_worker_that_passes_is_running(project):
    config, state = project
    beat(state, owner.token(), last_pass_ago=0.5)
    status = observe(config, state)
    assert (status.state, status.pid, status.resumed, status.retried) == ("running",
                                                                          os.getpid(), 2, 1)
    assert status.healthy and "running" in worker_line(status)


def test_alive_but_silent_for_three_intervals_and_30s_is_stale(project):
    config, state = project
    beat(state, owner.token(), last_pass_ago=31, interval=1.0)
    status = observe(config, state)
    assert status.state == "stale" and not status.healthy
    assert "stale" in worker_line(status)
    beat(state, owner.token(), last_pass_ago=20, interval=10.0)  # within 3 intervals
    assert observe(config, state).state == "running"


def test_a_heartbeat_of_a_dead_or_zombie_process_is_stopped(project):
    config, state = project
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    while owner._state(child.pid) not in ("Z", None):
        time.sleep(0.01)
    token = f"{owner._HOST}/{child.pid}/{owner._start_time(child.pid) or '-'}/{owner.BOOT}"
    beat(state, token, last_pass_ago=0.1)  # the child is a zombie: not reaped yet
    status = observe(config, state)
    assert status.state == "stopped" and not status.healthy  # enabled, so it should run
    assert "`shopctl up` starts it" in worker_line(status)
    assert stop(config, state) is False  # nothing to stop
    child.wait()
    assert observe(config, state).state == "stopped"


def test_disabled_and_stopped_is_healthy_and_says_nothing(tmp_path):
    config = config_in(tmp_path, enabled=False)
    status = observe(config, ProjectState(tmp_path))
    assert status.state == "stopped" and status.healthy and worker_line(status) is None


def test_a_broken_heartbeat_file_reads_as_no_worker(project):
    config, state = project
    state.worker_file.write_text("{not json")
    assert observe(config, state).state == "stopped"


def test_stop_ends_the_worker_and_removes_its_heartbeat(project):
    config, state = project
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        token = f"{owner._HOST}/{child.pid}/{owner._start_time(child.pid)}/{owner.BOOT}"
        beat(state, token, last_pass_ago=0.1)
        assert observe(config, state).state == "running"
        assert stop(config, state) is True
        assert child.wait(timeout=10) == -15  # SIGTERM, between passes
        assert not state.worker_file.exists()
    finally:
        child.kill()


def test_the_line_shows_counts_and_a_failed_pass():
    status = WorkerStatus(True, "running", 42, True, 1.2, 9, 3, 1, "ConnectError: refused")
    line = worker_line(status)
    assert "pid 42" in line and "3 resumed, 1 retried" in line
    assert "last pass failed: ConnectError: refused" in line
    assert "run by hand" in worker_line(WorkerStatus(True, "running", 42, False, 1.0))
