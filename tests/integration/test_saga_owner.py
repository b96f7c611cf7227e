"""One driver per saga, across real processes: a saga a live `saga run` drives is left
to it by `resume` in another process, and taken over once that process is SIGKILLed
(SQLite: at once, its pid is gone; PostgreSQL: once its lease ran out). Each test runs
on both backends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shopctl.saga import log as L
from shopctl.saga.engine import Engine
from tests.saga_backends import TEST_LEASE
from tests.unit.test_saga_engine import DEFINITION, INPUT, FakeActions

REPO = Path(__file__).resolve().parents[2]

# A driver whose first step hangs (a slow service): it holds the saga until killed.
DRIVER = """
import json, sys, time
from pathlib import Path
from shopctl.saga.engine import Engine
from shopctl.saga.store import open_log
args = json.loads(sys.argv[1])

class Hanging:
    def run(self, call, step_call):
        Path(args["marker"]).write_text(step_call.saga_id)
        time.sleep(120)

with open_log(args["db"], lease=args["lease"]) as log:
    Engine(log, Hanging()).start("order", args["definition"], args["input"])
"""


@pytest.fixture
def driver(tmp_path, saga_log_location):
    marker = tmp_path / "driving"
    args = {"db": str(saga_log_location), "marker": str(marker), "lease": TEST_LEASE,
            "definition": DEFINITION, "input": INPUT}
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, json.dumps(args)], cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    deadline = time.monotonic() + 30
    while not marker.exists():
        assert proc.poll() is None, "the driver exited"
        assert time.monotonic() < deadline, "the driver never reached its first step"
        time.sleep(0.05)
    yield proc, marker.read_text()
    proc.kill()
    proc.wait()


def resume_once_gone(engine, within: float = 15.0):
    """resume_all until no saga is left busy (a dead driver's lease runs out first on
    PostgreSQL): (the sagas driven, how long it took)."""
    began = time.monotonic()
    while True:
        done, busy = engine.resume_all()
        if not busy or time.monotonic() - began > within:
            return done, busy, time.monotonic() - began
        time.sleep(0.05)


def test_a_live_driver_keeps_its_saga_and_a_killed_one_lets_it_be_resumed(open_saga_log,
                                                                          driver):
    proc, saga_id = driver
    actions = FakeActions()
    with open_saga_log() as log:
        engine = Engine(log, actions, sleep=lambda _: None)
        time.sleep(2 * TEST_LEASE)  # a live driver keeps its saga past its first lease
        done, busy = engine.resume_all()
        assert done == [] and [b.saga_id for b in busy] == [saga_id]
        assert f"process {proc.pid}" in busy[0].message
        with pytest.raises(L.SagaBusy):
            engine.resume(saga_id)
        assert actions.calls == []  # nothing was done behind the driver's back

        proc.send_signal(signal.SIGKILL)
        proc.wait()
        done, busy, _ = resume_once_gone(engine)
    assert busy == [] and [s.id for s in done] == [saga_id]
    assert done[0].status == L.COMPLETED
    # The step the dead driver had started runs again under its own idempotency key.
    first_call, first = actions.calls[0]
    assert first_call == "orders.create_order" and first.key == f"saga-{saga_id}-create_order"


def test_force_takes_a_saga_over_whatever_its_driver(open_saga_log, driver):
    _, saga_id = driver
    with open_saga_log() as log:
        engine = Engine(log, FakeActions(), sleep=lambda _: None)
        assert engine.resume(saga_id, force=True).status == L.COMPLETED


def test_a_killed_driver_left_unreaped_is_no_driver(open_saga_log, driver):
    """The driver is SIGKILLed but its parent (this test) never waits for it: it stays a
    zombie, whose pid still answers kill(pid, 0). It is gone all the same, so resume
    takes the saga over instead of leaving it to a dead process."""
    proc, saga_id = driver
    proc.send_signal(signal.SIGKILL)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{proc.pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z":
        assert time.monotonic() < deadline, "the killed driver never became a zombie"
        time.sleep(0.02)
    os.kill(proc.pid, 0)  # a zombie still looks alive to a signal 0 probe
    with open_saga_log() as log:
        done, busy, _ = resume_once_gone(Engine(log, FakeActions(), sleep=lambda _: None))
    assert busy == [] and [(s.id, s.status) for s in done] == [(saga_id, L.COMPLETED)]
    assert Path(f"/proc/{proc.pid}").exists()  # still unreaped: the fixture reaps it
