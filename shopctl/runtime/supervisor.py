"""A tiny process supervisor: one per local unit (a service, Consul or RabbitMQ).

    python -m shopctl.runtime.supervisor [--detach] SPEC.json

SPEC (written by shopctl.runtime.local) says what to run:
    unit, role, project, launch_id, argv, cwd, env (the child's complete environment),
    log, state, config_hash, grace (seconds from SIGTERM to SIGKILL), death_signal
    (what the child gets if the supervisor dies), backoff {initial, max, reset_after},
    meta (copied into the state file untouched).

What it guarantees:
- The child's stdout and stderr are appended to `log`, every line prefixed with an
  ISO-8601 UTC timestamp (`format_line`/`parse_line` are the format), so the logs of
  several units can be interleaved. The supervisor's own news is marked "[shopctl]".
- Any exit that was not asked for counts as a crash: the child is started again after
  a backoff that doubles per crash in a row (reset once a child ran `reset_after`
  seconds) and `restarts` counts every restart.
- `state` is rewritten atomically on every change: {unit, role, project, launch_id,
  state (starting|running|restarting|exited), supervisor_pid, child_pid, started_at
  (current child), supervisor_started_at, restarts, config_hash, last_exit_code
  (shell style: 128+N when killed by signal N), error, updated_at, log, meta}.
- SIGTERM/SIGINT/SIGHUP: the child's process group gets SIGTERM, then SIGKILL after
  `grace`; the state becomes "exited" and the supervisor exits.
- If the supervisor itself dies (even by SIGKILL) the kernel sends `death_signal` to
  the child (PR_SET_PDEATHSIG), so no service outlives its supervisor. The state file
  then still says "running": readers must check that `supervisor_pid` is alive.

--detach forks once more and returns at once, so the supervisor is adopted by init and
never becomes a zombie of the shopctl process that launched it.

The readers of what a supervisor writes (`LogReader`, `supervisor_running`) live here
too, next to the formats they read.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import selectors
import shlex
import signal
import subprocess
import sys
import time
from collections import deque
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shopctl.state import write_atomic
from shopctl.units import LogLine

MODULE = "shopctl.runtime.supervisor"
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
_TIME_WIDTH = len("2000-01-01T00:00:00.000000Z")
_MAX_PARTIAL = 64 * 1024  # a "line" longer than this is written in pieces
_POLL = 0.2
PR_SET_PDEATHSIG = 1


# -- the log format (shared with readers) ------------------------------------------------


def format_line(text: str, when: float | None = None) -> str:
    stamp = datetime.fromtimestamp(time.time() if when is None else when, UTC)
    return f"{stamp.strftime(_TIME_FORMAT)} {text}\n"


def parse_line(line: str) -> tuple[float | None, str]:
    """(unix time, text) of one log line; (None, line) when it has no timestamp prefix
    (e.g. a traceback of the supervisor itself, written to the log without one)."""
    line = line.rstrip("\n")
    if len(line) > _TIME_WIDTH and line[_TIME_WIDTH] == " " and line[_TIME_WIDTH - 1] == "Z":
        try:
            stamp = datetime.strptime(line[:_TIME_WIDTH], _TIME_FORMAT).replace(tzinfo=UTC)
        except ValueError:
            return None, line
        return stamp.timestamp(), line[_TIME_WIDTH + 1:]
    return None, line


def exit_code(returncode: int) -> int:
    """Popen's returncode in the shell's convention (-9 -> 137), as Docker reports it."""
    return 128 - returncode if returncode < 0 else returncode


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"killed by {name} (exit {exit_code(returncode)})"
    return f"exit code {returncode}"


def next_backoff(crashes_in_a_row: int, initial: float, maximum: float) -> float:
    """Seconds to wait before restart number `crashes_in_a_row` (1-based) of a streak."""
    return min(maximum, initial * 2 ** max(0, crashes_in_a_row - 1))


# -- reading what a supervisor wrote (used by shopctl.runtime.local) ----------------------


def supervisor_running(pid: int, spec_path: Path) -> bool:
    """`pid` is a live supervisor of `spec_path`. The command line is compared because a
    pid alone may have been reused, and a zombie (empty command line) has finished."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return MODULE.encode() in cmdline and str(spec_path).encode() in cmdline


class LogReader:
    """Reads one unit's log file incrementally: complete lines only, from where it stopped.

    Lines without a timestamp (the supervisor's own tracebacks) take the previous
    line's, so they stay next to it when logs are interleaved. A file that shrank was
    replaced or truncated: reading starts over.
    """

    def __init__(self, service: str, path: Path):
        self.service = service
        self.path = path
        self.offset = 0
        self.last_time: float | None = None

    def read_new(self, tail: int | None = None) -> list[LogLine]:
        try:
            with open(self.path, "rb") as handle:
                if os.fstat(handle.fileno()).st_size < self.offset:
                    self.offset = 0
                handle.seek(self.offset)
                data = handle.read()
        except FileNotFoundError:
            return []
        complete = data.rfind(b"\n") + 1  # a partial last line waits for its end
        self.offset += complete
        raw_lines = data[:complete].decode(errors="replace").splitlines()
        lines = deque(maxlen=tail) if tail is not None else []
        for raw in raw_lines:
            when, text = parse_line(raw)
            if when is None:
                when = self.last_time
            else:
                self.last_time = when
            lines.append(LogLine(self.service, text, when))
        return list(lines)


# -- the supervisor ----------------------------------------------------------------------


class Supervisor:
    def __init__(self, spec: dict[str, Any]):
        self.spec = spec
        self.argv: list[str] = spec["argv"]
        self.state_path = Path(spec["state"])
        # Unbuffered append: every line is one write(2) with O_APPEND, so our lines and
        # a traceback of ours on stderr (the same file) never tear each other.
        self.log_file = open(spec["log"], "ab", buffering=0)
        self.grace = float(spec.get("grace", 10.0))
        backoff = spec.get("backoff") or {}
        self.backoff_initial = float(backoff.get("initial", 0.5))
        self.backoff_max = float(backoff.get("max", 30.0))
        self.reset_after = float(backoff.get("reset_after", 30.0))
        self.death_signal = signal.Signals[spec.get("death_signal", "SIGKILL")]
        self.stopping = False
        self.pipe: _LinePipe | None = None  # the current child's output
        self.record: dict[str, Any] = {
            "unit": spec["unit"],
            "role": spec.get("role", "service"),
            "project": spec.get("project"),
            "launch_id": spec.get("launch_id"),
            "state": "starting",
            "supervisor_pid": os.getpid(),
            "child_pid": None,
            "started_at": None,
            "supervisor_started_at": time.time(),
            "restarts": 0,
            "config_hash": spec.get("config_hash"),
            "last_exit_code": None,
            "error": None,
            "log": spec["log"],
            "meta": spec.get("meta") or {},
        }

    # - small helpers -

    def save(self, **changes: Any) -> None:
        self.record.update(changes, updated_at=time.time())
        write_atomic(self.state_path, json.dumps(self.record, indent=1) + "\n", mode=0o644)

    def note(self, text: str) -> None:
        self.write(f"[shopctl] {text}")

    def write(self, text: str) -> None:
        when = time.time()  # one stamp for all lines of one message keeps them together
        lines = text.splitlines() or [""]
        self.log_file.write("".join(format_line(line, when) for line in lines).encode())

    def _request_stop(self, signum: int, frame: object) -> None:
        self.stopping = True

    # - lifecycle -

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._request_stop)
        self.save()
        crashes = 0
        while not self.stopping:
            try:
                child = self.spawn()
            except OSError as exc:  # the command cannot run at all: retrying will not help
                error = f"cannot start {self.argv[0]}: {exc}"
                self.note(error)
                self.save(state="exited", child_pid=None, error=error)
                return 1
            started = time.monotonic()
            returncode = self.pump(child)
            if self.stopping or returncode is None:
                returncode = self.stop_child(child)
                self.note(f"stopped ({describe_exit(returncode)})")
                self.save(state="exited", child_pid=None, last_exit_code=exit_code(returncode))
                break
            crashes = 1 if time.monotonic() - started >= self.reset_after else crashes + 1
            delay = next_backoff(crashes, self.backoff_initial, self.backoff_max)
            self.note(f"{describe_exit(returncode)}; restarting in {delay:.1f}s")
            self.save(state="restarting", child_pid=None, last_exit_code=exit_code(returncode))
            self.sleep(delay)
            if not self.stopping:
                self.record["restarts"] += 1
        self.save(state="exited", child_pid=None)
        return 0

    def spawn(self) -> subprocess.Popen[bytes]:
        child = subprocess.Popen(
            self.argv,
            cwd=self.spec.get("cwd"),
            env=self.spec.get("env"),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            # Its own process group: stopping signals the whole group, so helpers the
            # child starts (rabbitmq-server's Erlang VM) stop with it.
            process_group=0,
            preexec_fn=_die_with_parent(self.death_signal, os.getpid()),
        )
        os.set_blocking(child.stdout.fileno(), False)  # type: ignore[union-attr]
        self.pipe = _LinePipe(child.stdout.fileno(), self.write)  # type: ignore[union-attr]
        command = shlex.join(self.argv).replace("\n", "\\n")  # one line in the log
        self.note(f"started pid {child.pid}: {command}")
        self.save(state="running", child_pid=child.pid, started_at=time.time(), error=None)
        return child

    def pump(self, child: subprocess.Popen[bytes], until: float | None = None) -> int | None:
        """Copy the child's output to the log until it exits, and return its returncode.

        Returns None instead when, without `until`, a stop is requested, or when the
        monotonic deadline `until` passes. Output keeps flowing while a stopping child
        shuts down: a full pipe would block it and turn a clean stop into a SIGKILL.
        """
        if child.returncode is not None:  # already reaped (and its pipe closed)
            return child.returncode
        pipe = self.pipe
        assert child.stdout is not None and pipe is not None
        with selectors.DefaultSelector() as selector:
            if pipe.open:
                selector.register(pipe.fd, selectors.EVENT_READ)
            while True:
                if until is None and self.stopping:
                    return None
                if until is not None and time.monotonic() >= until:
                    return None
                if pipe.open and selector.select(_POLL):
                    if not pipe.read():  # EOF: the child closed its output, may still run
                        selector.unregister(pipe.fd)
                elif not pipe.open:
                    time.sleep(_POLL)
                returncode = child.poll()
                if returncode is not None:
                    pipe.drain()
                    child.stdout.close()
                    return returncode

    def stop_child(self, child: subprocess.Popen[bytes]) -> int:
        """SIGTERM the child's process group, SIGKILL it after the grace; its returncode."""
        _signal_group(child.pid, signal.SIGTERM)
        returncode = self.pump(child, until=time.monotonic() + self.grace)
        if returncode is None:
            self.note(f"still running {self.grace:g}s after SIGTERM; sending SIGKILL")
            _signal_group(child.pid, signal.SIGKILL)
            returncode = self.pump(child, until=time.monotonic() + 5.0)
            if returncode is None:  # unkillable (stuck in the kernel): stop reading, wait
                returncode = child.wait()
        _signal_group(child.pid, signal.SIGKILL)  # helpers that outlived the leader
        return returncode

    def sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.stopping and time.monotonic() < deadline:
            time.sleep(min(_POLL, max(0.0, deadline - time.monotonic())))


class _LinePipe:
    """Non-blocking reads from a pipe, handed on as complete lines (partials buffered)."""

    def __init__(self, fd: int, emit):
        self.fd = fd
        self.emit = emit
        self.buffer = b""
        self.open = True

    def read(self) -> bool:
        """Read what is available; False at EOF (the rest is flushed then)."""
        try:
            data = os.read(self.fd, 65536)
        except BlockingIOError:
            return True
        except OSError as exc:
            if exc.errno != errno.EBADF:
                raise
            data = b""
        if not data:
            self.flush()
            self.open = False
            return False
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        for line in lines:
            self.emit(_text(line))
        if len(self.buffer) > _MAX_PARTIAL:
            self.flush()
        return True

    def drain(self) -> None:
        """Read until nothing is left right now (grandchildren may keep the pipe open)."""
        while self.open:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                break
            if not data:
                break
            self.buffer += data
            *lines, self.buffer = self.buffer.split(b"\n")
            for line in lines:
                self.emit(_text(line))
        self.flush()

    def flush(self) -> None:
        if self.buffer:
            self.emit(_text(self.buffer))
            self.buffer = b""


def _text(raw: bytes) -> str:
    return raw.rstrip(b"\r").decode(errors="replace")


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _die_with_parent(sig: signal.Signals, parent_pid: int):
    """A preexec function asking the kernel to send `sig` to the child when we die.

    libc and prctl are looked up here, before fork, so the child only makes one plain
    C call between fork and exec. If we died before prctl took effect, the child is
    already orphaned and would never get the signal: it exits instead.
    """
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent_pid:
            os._exit(1)

    return preexec


def _detach() -> None:
    """Fork; the parent returns to whoever launched us at once, the child leads a new
    session (no terminal, its own process group) and is adopted by init."""
    if os.fork() > 0:
        os._exit(0)
    os.setsid()


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    detach = "--detach" in args
    args = [a for a in args if a != "--detach"]
    if len(args) != 1:
        print(f"usage: python -m {MODULE} [--detach] SPEC.json", file=sys.stderr)
        return 2
    spec = json.loads(Path(args[0]).read_text())
    if detach:
        _detach()
    return Supervisor(spec).run()


if __name__ == "__main__":
    sys.exit(main())
