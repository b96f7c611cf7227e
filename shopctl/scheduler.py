"""Start a set of nodes in dependency order, in parallel, each behind a health gate.

The model is docker compose's `parallel_execute` (a node goes as soon as what it needs
is there, whatever its level) with nameko's one lifecycle for every unit. Nothing here
knows what a node is (a service instance, a container on some host) or what "healthy"
means: the caller gives each node's `start` and the gate as hooks. Nothing prints: news
goes through progress(name, message), passed on only when a name's message changes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Iterable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

from shopctl.errors import Cancelled


@dataclass(frozen=True)
class Node:
    """One unit of work. `start` runs in a worker thread; what it returns goes to
    `on_started`. A node without `start` runs already: it is taken as started (with
    None) in the scheduler's thread once what it needs is there. `grace`: the seconds
    from then that it has to pass `look`."""

    name: str
    needs: tuple[str, ...] = ()
    start: Callable[[], object] | None = None
    grace: float = float("inf")


def _nothing(*args: object) -> None:
    return None


class Scheduler:
    """Runs nodes until every one passes the gate. Each poll, in this order:

    1. `cancel` set: the starts under way get `cancel_wait` seconds, then Cancelled.
    2. `ready()` must be True to finish; it is called every poll, so it may raise early.
    3. `look(started)` returns the started nodes that pass now (reported "healthy"); it
       may report on the others. Called once anything started, or at once when a node
       runs already.
    4. A pending node whose needs all passed (`look`, or `ready_for_dependents`) starts;
       the others are reported "waiting for ...".
    5. Each finished start goes to `on_started(name, result)`; a start that raised
       raises here.
    6. `watch(names)` looks at the started nodes that do not pass; it raises to fail.
    7. `ready_for_dependents(name)` runs in the pool for the nodes others need that were
       started but do not pass `look` yet: a quicker answer, only to unblock dependents
       (it should return False rather than raise).
    8. Done when nothing is pending or starting, every node passes `look`, and ready().
    9. Nodes started longer than their grace ago that do not pass: raise on_late(names).
    Then it sleeps `poll` seconds, unless something happened (a running node taken, a
    dependency answered) that the next look builds on.

    Hooks run in the scheduler's thread, except `start` and `ready_for_dependents`. They
    may read `pending`, `starting`, `started`, `passing` and `answered`, and report
    through `report(name, message)`.
    """

    def __init__(
        self,
        nodes: Iterable[Node],
        look: Callable[[list[str]], Collection[str]],
        on_late: Callable[[list[str]], BaseException],
        on_started: Callable[[str, object], None] = _nothing,
        ready_for_dependents: Callable[[str], bool] | None = None,
        watch: Callable[[list[str]], None] = _nothing,
        ready: Callable[[], bool] = lambda: True,
        progress: Callable[[str, str], None] = _nothing,
        poll: float = 0.1,
        cancel: threading.Event | None = None,
        cancel_wait: float = 0.8,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.nodes = {node.name: node for node in nodes}
        _check_order(self.nodes)
        self.look, self.on_late, self.on_started = look, on_late, on_started
        self.ready_for_dependents, self.watch, self.ready = ready_for_dependents, watch, ready
        self.progress, self.poll, self.clock, self.sleep = progress, poll, clock, sleep
        self.cancel, self.cancel_wait = cancel, cancel_wait
        self.pending = dict(self.nodes)
        self.starting: dict[str, Future] = {}
        self.started: dict[str, object] = {}  # name -> what its start returned
        self.passing: set[str] = set()  # passed the latest look
        self.answered: set[str] = set()  # passed ready_for_dependents
        self._needed = {need for node in self.nodes.values() for need in node.needs}
        self._probes: dict[str, Future] = {}
        self._deadlines: dict[str, float] = {}
        self._reported: dict[str, str] = {}

    def report(self, name: str, message: str) -> None:
        if self._reported.get(name) != message:
            self._reported[name] = message
            self.progress(name, message)

    def run(self) -> None:
        """Returns once every node passes; raises the first failure or Cancelled. What
        started runs on either way."""
        pool = ThreadPoolExecutor(max_workers=max(1, len(self.nodes) + len(self._needed)),
                                  thread_name_prefix="shopctl-sched")
        running_already = any(node.start is None for node in self.nodes.values())
        try:
            while True:
                if self._cancelled():
                    wait(self.starting.values(), timeout=self.cancel_wait)
                    raise Cancelled("cancelled while starting")
                ready = self.ready()
                looked = list(self.started)
                if looked or running_already:
                    self.passing = set(self.look(looked))
                for name in looked:
                    if name in self.passing:
                        self.report(name, "healthy")
                progressed = self._start_unblocked(pool)
                for name, future in list(self.starting.items()):
                    if future.done():
                        del self.starting[name]
                        self._take(name, future.result())
                self.watch([name for name in self.started if name not in self.passing])
                progressed |= self._probe(pool, looked)
                if (ready and not self.pending and not self.starting
                        and self.passing >= self.nodes.keys()):
                    return
                late = [name for name in self.started
                        if name not in self.passing and self.clock() > self._deadlines[name]]
                if late:
                    raise self.on_late(late)
                if not progressed:
                    self.sleep(self.poll)
        finally:
            # A cancelled run does not wait for a start that is stuck.
            pool.shutdown(wait=not self._cancelled(), cancel_futures=True)

    def _cancelled(self) -> bool:
        return self.cancel is not None and self.cancel.is_set()

    def _start_unblocked(self, pool: ThreadPoolExecutor) -> bool:
        """Starts what may start; True when a node that runs already was taken."""
        taken = False
        for name, node in list(self.pending.items()):
            blockers = [n for n in node.needs if n not in self.passing and n not in self.answered]
            if blockers:
                self.report(name, f"waiting for {', '.join(blockers)}")
                continue
            del self.pending[name]
            self._deadlines[name] = self.clock() + node.grace
            if node.start is None:
                self._take(name, None)
                taken = True
            else:
                self.starting[name] = pool.submit(node.start)
        return taken

    def _take(self, name: str, result: object) -> None:
        self.started[name] = result
        self.on_started(name, result)

    def _probe(self, pool: ThreadPoolExecutor, looked: list[str]) -> bool:
        """Probes needed nodes that `look` saw not passing; True once one answered."""
        if self.ready_for_dependents is None:
            return False
        answered = False
        for name in [n for n in looked if n in self._needed]:
            if name in self.passing or name in self.answered:
                continue
            future = self._probes.pop(name, None)
            if future is None:
                self._probes[name] = pool.submit(self.ready_for_dependents, name)
            elif not future.done():
                self._probes[name] = future
            elif future.result():
                self.answered.add(name)
                answered = True  # its dependents may start now
        return answered


def _check_order(nodes: dict[str, Node]) -> None:
    """Refuses nodes that could never start: a cycle, or a need that is no node."""
    done: set[str] = set()
    left = dict(nodes)
    while left:
        free = [name for name, node in left.items() if done.issuperset(node.needs)]
        if not free:
            raise ValueError(f"these can never start (a cycle, or a need that is no node): "
                             f"{', '.join(left)}")
        done.update(free)
        for name in free:
            del left[name]
