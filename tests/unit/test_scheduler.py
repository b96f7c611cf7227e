"""shopctl.scheduler alone: nodes with needs, starts in a pool, a health gate of hooks, a
fake clock. Nothing of Consul, Docker or shop.yaml."""

from __future__ import annotations

import threading
import time

import pytest

from shopctl.errors import Cancelled
from shopctl.scheduler import Node, Scheduler

POLL = 0.1


class World:
    """Fake time (sleeping advances it, and really yields so the pool's threads run) and
    nodes that pass the gate `boot[name]` seconds after they start (never when None)."""

    def __init__(self, boot: dict[str, float | None]):
        self.now = 0.0
        self.boot = boot
        self.started_at: dict[str, float] = {}
        self.events: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        time.sleep(0.005)
        self.now += seconds

    def starter(self, name: str):
        def start() -> str:
            with self.lock:
                self.started_at[name] = self.now
            return f"{name} handle"
        return start

    def look(self, names: list[str]) -> set[str]:
        return {name for name in names if self.boot.get(name) is not None
                and self.now >= self.started_at.get(name, 0.0) + self.boot[name]}

    def scheduler(self, nodes, **hooks) -> Scheduler:
        hooks.setdefault("on_late", lambda names: TimeoutError(", ".join(names)))
        return Scheduler(nodes, look=self.look, progress=lambda *e: self.events.append(e),
                         poll=POLL, clock=self.clock, sleep=self.sleep, **hooks)

    def node(self, name: str, *needs: str, grace: float = 30.0) -> Node:
        return Node(name, needs, self.starter(name), grace)


def test_a_node_starts_once_what_it_needs_passes_and_independent_ones_at_once():
    world = World({"db": 2.0, "cache": 1.0, "api": 1.0, "web": 0.5})
    started: list[tuple[str, object]] = []
    world.scheduler([world.node("db"), world.node("cache"), world.node("api", "db", "cache"),
                     world.node("web", "api")],
                    on_started=lambda name, result: started.append((name, result))).run()
    at = world.started_at
    assert at["db"] == at["cache"] == 0.0
    assert 2.0 <= at["api"] < 2.0 + 3 * POLL  # after the slower of its two needs
    assert 3.0 <= at["web"] < 3.0 + 3 * POLL
    assert ("api", "api handle") in started and len(started) == 4


def test_independent_starts_run_in_parallel():
    world = World({"a": 0.0, "b": 0.0, "c": 0.0})
    both = threading.Barrier(3, timeout=5)  # each start returns only once all three run

    def start(name):
        def run():
            both.wait()
            return world.starter(name)()
        return run

    world.scheduler([Node(n, (), start(n)) for n in "abc"]).run()
    assert sorted(world.started_at) == ["a", "b", "c"]


def test_a_node_that_never_passes_raises_on_late_after_its_grace_and_its_dependents_wait():
    world = World({"db": None, "api": 0.0, "cache": 0.0})
    late: list[list[str]] = []

    def on_late(names):
        late.append(names)
        return TimeoutError(f"{names} did not pass")

    with pytest.raises(TimeoutError, match="db"):
        world.scheduler([world.node("db", grace=3.0), world.node("api", "db"),
                         world.node("cache")], on_late=on_late).run()
    assert late == [["db"]]
    assert 3.0 < world.now < 3.0 + 3 * POLL
    assert "api" not in world.started_at
    assert ("api", "waiting for db") in world.events


def test_a_start_that_raises_fails_the_run():
    world = World({"a": 0.0, "b": 0.0})

    def broken():
        raise RuntimeError("no such image")

    with pytest.raises(RuntimeError, match="no such image"):
        world.scheduler([Node("a", (), broken), world.node("b", "a")]).run()
    assert "b" not in world.started_at


def test_a_watch_that_raises_fails_the_run_before_the_deadline():
    world = World({"a": None})
    seen: list[list[str]] = []

    def watch(names):
        seen.append(names)
        if world.now >= 1.0:
            raise RuntimeError("a crashed")

    with pytest.raises(RuntimeError, match="a crashed"):
        world.scheduler([world.node("a")], watch=watch).run()
    assert world.now < 1.0 + 2 * POLL
    assert ["a"] in seen  # only the started nodes that do not pass


def test_cancel_stops_further_starts_and_raises_cancelled():
    world = World({"db": 5.0, "api": 0.0})
    cancel = threading.Event()

    def sleep(seconds):
        world.sleep(seconds)
        if world.now >= 1.0:
            cancel.set()

    run = world.scheduler([world.node("db"), world.node("api", "db")], cancel=cancel)
    run.sleep = sleep
    with pytest.raises(Cancelled):
        run.run()
    assert world.now < 1.0 + 2 * POLL
    assert list(world.started_at) == ["db"]


def test_a_start_stuck_when_cancelled_is_given_cancel_wait_and_not_waited_for():
    world = World({})
    cancel, release = threading.Event(), threading.Event()

    def stuck():
        cancel.set()
        release.wait(10)

    began = time.monotonic()
    with pytest.raises(Cancelled):
        world.scheduler([Node("a", (), stuck)], cancel=cancel, cancel_wait=0.2).run()
    release.set()
    assert time.monotonic() - began < 2.0


def test_progress_is_reported_once_per_change():
    world = World({"db": 1.0, "api": 0.5})
    world.scheduler([world.node("db"), world.node("api", "db")]).run()
    assert world.events == [("api", "waiting for db"), ("db", "healthy"), ("api", "healthy")]


def test_ready_for_dependents_lets_them_start_before_look_passes():
    """`look` passes db at 3 s; db answers the quick probe at 1 s: api goes then. Only
    needed nodes are probed, and only until look passes them."""
    world = World({"db": 3.0, "api": 0.0, "solo": 3.0})
    probed: list[tuple[str, float]] = []

    def probe(name):
        probed.append((name, world.now))
        return world.now >= 1.0

    world.scheduler([world.node("db"), world.node("api", "db"), world.node("solo")],
                    ready_for_dependents=probe).run()
    assert 1.0 <= world.started_at["api"] < 1.0 + 4 * POLL
    assert {name for name, _ in probed} == {"db"}
    assert max(at for _, at in probed) < 1.0 + 4 * POLL  # answered: no more probes


def test_nodes_that_run_already_are_taken_without_starting_or_sleeping():
    world = World({"db": 0.0, "api": 0.0})
    started, slept = [], []
    run = world.scheduler([Node("db"), Node("api", ("db",))],
                          on_started=lambda name, result: started.append((name, result)))
    run.sleep = slept.append
    run.run()
    assert started == [("db", None), ("api", None)]
    assert slept == [] and world.started_at == {}


def test_run_waits_for_ready_and_raises_what_it_raises():
    world = World({"a": 0.0})
    world.scheduler([world.node("a")], ready=lambda: world.now >= 2.0).run()
    assert 2.0 <= world.now < 2.0 + 2 * POLL

    def broken():
        raise RuntimeError("broker failed")

    with pytest.raises(RuntimeError, match="broker failed"):
        world.scheduler([world.node("a")], ready=broken).run()


def test_a_cycle_or_an_unknown_need_is_refused_before_anything_starts():
    world = World({})
    with pytest.raises(ValueError, match="a, b"):
        world.scheduler([world.node("a", "b"), world.node("b", "a"), world.node("c")])
    with pytest.raises(ValueError, match="a"):
        world.scheduler([world.node("a", "nope")])
    assert world.started_at == {}
