"""Two drivers on hosts of their own, as far as the log can tell: separate processes on
one PostgreSQL saga log (a real server, tests/pgserver.py), one SIGKILLed mid-saga.
The other takes its sagas over once their lease ran out, never before, and nothing is
run twice: every step the dead driver finished is left alone, and the one it was in the
middle of is repeated once, with its own idempotency key (which a participant answers
with what it did the first time)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from shopctl.saga import log as L
from shopctl.saga.store import open_log
from tests.unit.test_saga_engine import DEFINITION, INPUT

REPO = Path(__file__).resolve().parents[2]
LEASE = 2.0

# One driver. Every participant call is appended to a shared file (pid, saga, step,
# key, time) before it answers. Driver "a" starts `sagas` sagas, one thread each, and
# hangs in their second step (a slow service) until it is killed; driver "b" runs sagas
# of its own, then sweeps as a worker does until told to stop.
DRIVER = """
import json, os, sys, threading, time
from pathlib import Path
from shopctl.saga.engine import Engine
from shopctl.saga.store import open_log
args = json.loads(sys.argv[1])
calls = os.open(args["calls"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

class Counting:
    def run(self, call, step_call):
        line = {"pid": os.getpid(), "role": args["role"], "saga": step_call.saga_id,
                "step": step_call.step, "call": call, "key": step_call.key, "at": time.time()}
        os.write(calls, (json.dumps(line) + "\\n").encode())
        if args["role"] == "a" and step_call.step == args["hang_at"]:
            time.sleep(600)
        return {"order_id": 7, "total_cents": 100} if step_call.step == "create_order" else {}

def start_one():
    with open_log(args["url"], lease=args["lease"]) as log:
        Engine(log, Counting(), sleep=lambda _: None).start(
            "order", args["definition"], args["input"])

threads = [threading.Thread(target=start_one) for _ in range(args["sagas"])]
for t in threads:
    t.start()
for t in threads:
    t.join()
if args["role"] == "b":
    with open_log(args["url"], lease=args["lease"]) as log:
        engine = Engine(log, Counting(), sleep=lambda _: None)
        while not Path(args["stop"]).exists():
            engine.sweep()
            time.sleep(0.1)
"""


def _driver(tmp_path: Path, url: str, role: str, sagas: int) -> subprocess.Popen:
    args = {"url": url, "lease": LEASE, "role": role, "sagas": sagas, "hang_at": "reserve_stock",
            "calls": str(tmp_path / "calls.jsonl"), "stop": str(tmp_path / "stop"),
            "definition": DEFINITION, "input": INPUT}
    return subprocess.Popen([sys.executable, "-c", DRIVER, json.dumps(args)], cwd=REPO,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(
                                [str(REPO), os.environ.get("PYTHONPATH", "")])})


def _calls(tmp_path: Path) -> list[dict]:
    path = tmp_path / "calls.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def _wait(predicate, within: float, what: str, *procs: subprocess.Popen) -> float:
    deadline = time.monotonic() + within
    while not predicate():
        for proc in procs:
            assert proc.poll() is None, f"a driver exited ({proc.returncode}) before {what}"
        assert time.monotonic() < deadline, f"no {what} within {within}s"
        time.sleep(0.05)
    return time.time()


def test_a_killed_drivers_sagas_are_taken_over_after_its_lease_and_nothing_runs_twice(
        pg_server, tmp_path):
    url = pg_server.new_database()
    b = _driver(tmp_path, url, "b", sagas=3)
    a = _driver(tmp_path, url, "a", sagas=4)
    try:
        _wait(lambda: sum(c["role"] == "a" and c["step"] == "reserve_stock"
                          for c in _calls(tmp_path)) == 4, 60, "driver a hanging in 4 sagas",
              a, b)
        a_sagas = {c["saga"] for c in _calls(tmp_path) if c["role"] == "a"}
        # Alive, a keeps its sagas well past a lease (its renewals hold them) while b
        # sweeps ten times a second.
        time.sleep(3 * LEASE)
        assert not [c for c in _calls(tmp_path) if c["role"] == "b" and c["saga"] in a_sagas]

        a.send_signal(signal.SIGKILL)
        a.wait()
        killed_at = time.time()
        with open_log(url) as log:
            _wait(lambda: all(log.get(s).status == L.COMPLETED for s in a_sagas), 30,
                  "takeover of driver a's sagas", b)
            sagas = log.list(limit=100)
            outbox = {s.id: [e.event_type for e in log.outbox(s.id)] for s in sagas}
    finally:
        (tmp_path / "stop").touch()
        for proc in (a, b):
            if proc.poll() is None:
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    assert b.returncode == 0
    calls = _calls(tmp_path)
    assert len(sagas) == 7 and {s.status for s in sagas} == {L.COMPLETED}
    assert all(kinds == ["order.completed"] for kinds in outbox.values())

    taken_over = [c for c in calls if c["role"] == "b" and c["saga"] in a_sagas]
    # Not before the lease a's last renewal gave it (renewed each third of a lease).
    assert min(c["at"] for c in taken_over) >= killed_at + LEASE * 0.6, (
        "a dead driver's saga was taken before its lease ran out")
    per_step = Counter((c["saga"], c["step"]) for c in calls)
    for saga in a_sagas:
        # create_order finished under a: never called again. reserve_stock was cut off
        # mid-call: repeated once by b with the same key. The rest: once, by b.
        assert [per_step[(saga, s["name"])] for s in DEFINITION["steps"]] == [1, 2, 1, 1]
        repeats = [c for c in calls if c["saga"] == saga and c["step"] == "reserve_stock"]
        assert [c["role"] for c in repeats] == ["a", "b"]
        assert len({c["key"] for c in repeats}) == 1
    for saga in {s.id for s in sagas} - a_sagas:  # b's own: every step once, by b
        assert [per_step[(saga, s["name"])] for s in DEFINITION["steps"]] == [1, 1, 1, 1]
