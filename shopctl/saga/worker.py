"""The saga worker: one long-running driver per project that keeps sagas moving.

Each pass continues the sagas whose driver is gone, retries those an outage left stuck,
and nudges the outbox publisher. After every pass the worker writes a heartbeat file
(`.shopctl/saga-worker.json`) naming its process, so `shopctl status` can tell a
working worker from a dead or hung one without asking it.

`up` runs the worker as part of the shop when shop.yaml says `saga_worker: {enabled:
true}` (`ensure`), as a detached process on the host whichever runtime runs the
services: it needs the saga log, a file of the project (or the PostgreSQL database
`saga_log` names), and reaches the services the way `shopctl saga run` does. `down`
stops it (`stop`). Workers on several hosts may share a PostgreSQL log: each takes
only the sagas whose driver's lease ran out (shopctl.saga.pglog).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from shopctl.config import ShopConfig
from shopctl.fingerprint import data_hash
from shopctl.saga import owner
from shopctl.state import ProjectState, write_atomic

STARTED_WITHIN = 10.0  # seconds a started worker has to write its first heartbeat
STOP_WITHIN = 5.0  # seconds between SIGTERM and SIGKILL
LOG_TAIL = 8


@dataclass
class Heartbeat:
    """What a worker says about itself after each pass (the heartbeat file's content)."""

    owner: str  # saga.owner token: host/pid/start/boot
    digest: str  # of the settings it runs with (see settings_digest)
    started_at: float
    interval: float
    managed: bool = False  # started by `up` (and so stopped by `down`)
    last_pass_at: float | None = None
    passes: int = 0
    resumed: int = 0
    retried: int = 0
    last_error: str | None = None

    @property
    def pid(self) -> int:
        return int(self.owner.split("/")[1])

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def read(cls, state: ProjectState) -> Heartbeat | None:
        try:
            data = json.loads(state.worker_file.read_text(encoding="utf-8"))
            return cls(**data)
        except (OSError, ValueError, TypeError):
            return None

    def write(self, state: ProjectState) -> None:
        write_atomic(state.worker_file, json.dumps(self.to_dict()), mode=0o600)


@dataclass(frozen=True)
class WorkerStatus:
    """The worker as `status` shows it. state: running | stale (alive, but no pass for
    three intervals: hung on something) | stopped (not running; `enabled` says whether
    it should)."""

    enabled: bool
    state: str
    pid: int | None = None
    managed: bool = False
    last_pass_ago: float | None = None
    passes: int = 0
    resumed: int = 0
    retried: int = 0
    last_error: str | None = None
    log: str | None = None

    @property
    def healthy(self) -> bool:
        return self.state == "running" or (not self.enabled and self.state == "stopped")

    def to_dict(self) -> dict:
        data = dict(self.__dict__)
        if self.last_pass_ago is not None:
            data["last_pass_ago"] = round(self.last_pass_ago, 1)
        return data


@dataclass
class WorkerChange:
    """What `ensure` did: started | restarted (settings changed) | kept | stopped |
    none (disabled and not running)."""

    action: str
    status: WorkerStatus
    detail: str = field(default="")


def settings_digest(config: ShopConfig) -> str:
    """What a running worker must be restarted for: its settings, the config it drives
    sagas with (endpoints, contracts) and the shopctl version running it."""
    from shopctl import __version__

    return data_hash({"version": __version__, "config": config.to_public_dict()})


def _alive(beat: Heartbeat | None) -> bool:
    return beat is not None and owner.alive(beat.owner) is not False


def observe(config: ShopConfig, state: ProjectState | None = None,
            now: float | None = None) -> WorkerStatus:
    state = state or ProjectState(config.root)
    enabled = config.saga_worker.enabled
    beat = Heartbeat.read(state)
    log = str(state.worker_log) if state.worker_log.exists() else None
    if not _alive(beat):
        return WorkerStatus(enabled, "stopped", log=log,
                            last_error=beat.last_error if beat else None)
    now = time.time() if now is None else now
    since = beat.last_pass_at or beat.started_at
    stale = now - since > max(3 * beat.interval, 30.0)
    return WorkerStatus(enabled, "stale" if stale else "running", beat.pid, beat.managed,
                        None if beat.last_pass_at is None else now - beat.last_pass_at,
                        beat.passes, beat.resumed, beat.retried, beat.last_error, log)


def stop(config: ShopConfig, state: ProjectState | None = None) -> bool:
    """Stop the project's worker (SIGTERM, then SIGKILL after STOP_WITHIN s). Whether
    one was running."""
    state = state or ProjectState(config.root)
    beat = Heartbeat.read(state)
    if not _alive(beat):
        return False
    pid = beat.pid
    try:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_WITHIN
        while owner.alive(beat.owner) and time.monotonic() < deadline:
            time.sleep(0.05)
        if owner.alive(beat.owner):
            os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        state.worker_file.unlink()
    except FileNotFoundError:
        pass
    return True


def _log_tail(state: ProjectState) -> str:
    try:
        lines = state.worker_log.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-LOG_TAIL:])


def start(config: ShopConfig, state: ProjectState | None = None) -> WorkerStatus:
    """Start the worker as a detached process and wait for its first heartbeat;
    WorkerFailed (with the end of its log) when it exits or stays silent."""
    from shopctl.errors import ShopctlError

    state = state or ProjectState(config.root)
    state.ensure(state.dir)
    settings = config.saga_worker
    argv = [sys.executable, "-m", "shopctl", "-f", str(config.source), "saga", "worker",
            "--interval", str(settings.interval),
            "--retry-stuck-after", str(settings.retry_stuck_after), "--managed"]
    with open(state.worker_log, "ab") as log:
        log.write(f"--- started {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
        log.flush()
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                   cwd=config.root, start_new_session=True)
    deadline = time.monotonic() + STARTED_WITHIN
    while time.monotonic() < deadline:
        beat = Heartbeat.read(state)
        if beat is not None and beat.pid == process.pid and beat.last_pass_at is not None:
            return observe(config, state)
        if process.poll() is not None:
            break
        time.sleep(0.05)
    if process.poll() is None:
        process.kill()
    process.wait()
    raise ShopctlError(
        f"the saga worker did not start (exit {process.returncode}); the end of its log "
        f"({state.worker_log}):\n{_log_tail(state)}",
        hint="run `shopctl saga worker` in a terminal to see it fail, or set "
             "saga_worker.enabled: false")


def ensure(config: ShopConfig, state: ProjectState | None = None) -> WorkerChange:
    """Make the running worker match shop.yaml: start it, restart it when the config
    it drives with changed, or stop the one `up` started once it is disabled. A worker
    somebody runs by hand is left alone."""
    state = state or ProjectState(config.root)
    beat = Heartbeat.read(state)
    running = _alive(beat)
    if not config.saga_worker.enabled:
        if running and beat.managed:
            stop(config, state)
            return WorkerChange("stopped", observe(config, state))
        return WorkerChange("none", observe(config, state))
    if running and (beat.digest == settings_digest(config) or not beat.managed):
        return WorkerChange("kept", observe(config, state))
    action = "restarted" if running else "started"
    if running:
        stop(config, state)
    return WorkerChange(action, start(config, state))


def run(engine, config: ShopConfig, *, interval: float, retry_stuck_after: float,
        stop_event: threading.Event, once: bool = False, managed: bool = False,
        on_saga: Callable[[str, object], None] = lambda how, saga: None) -> None:
    """The worker's loop (the `saga worker` command): a pass every `interval` s until
    `stop_event` is set, a heartbeat after each. A pass that fails (the log unreadable,
    Consul gone) is recorded in the heartbeat and tried again next time."""
    state = ProjectState(config.root)
    beat = Heartbeat(owner.token(), settings_digest(config), time.time(), interval, managed)
    try:
        while True:
            try:
                resumed, retried = engine.sweep(retry_stuck_after=retry_stuck_after)
                beat.last_error = None
            except Exception as exc:  # noqa: BLE001 - kept going; the heartbeat says why
                resumed, retried = [], []
                beat.last_error = f"{type(exc).__name__}: {exc}"
            for how, sagas in (("resumed", resumed), ("retried", retried)):
                for saga in sagas:
                    on_saga(how, saga)
            beat.passes += 1
            beat.resumed += len(resumed)
            beat.retried += len(retried)
            beat.last_pass_at = time.time()
            beat.write(state)
            if engine.publisher is not None:
                engine.publisher.notify()  # and the publisher keeps draining the outbox
            if once or stop_event.wait(interval):
                break
    finally:
        current = Heartbeat.read(state)
        if current is not None and current.owner == beat.owner:
            try:
                state.worker_file.unlink()
            except FileNotFoundError:
                pass
