"""A live per-subject view for long work (`up`, `down`): one line a service (or infra
part), updated in place on a terminal; in a pipe (CI logs, `| tee`), one plain line per
event instead.

The news comes through the progress callback (shopctl.units.Progress) as
(subject, message). The view decides what each message means for the person watching:
- a line is done (a tick, no spinner) once its message says so ("ready", "healthy",
  "running on :8500", ...), and every line still in progress is done when the work ends
  well;
- a check that is still critical while its service is within its health start period
  is a normal start, shown as waiting (no red, no cross), and not printed in a pipe;
- Docker's build steps ("Step 3/14 : RUN ...") become "building image, step 3/14" on a
  terminal and are left out of a pipe; `--verbose` shows them as they are.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

BUILD_STEP = re.compile(r"^Step (\d+)/(\d+) : ")
# A service's (re)start or (for "unchanged") re-registration, from shopctl.orchestrate:
# Consul starts the checks of a registration critical.
STARTS = ("starting", "replacing", "restarting", "unchanged")
CHECK_NOT_PASSING = ("check critical", "check warning")

DONE_MESSAGES = {"healthy", "unchanged", "running", "ready", "stopped", "removed"}
DONE_PREFIXES = ("running on ", "ready on ", "reusing ", "deregistered ", "removed ",
                 "Consul bridge running", "loaded ", "already has ")  # the last two: lab load
DONE_PATTERNS = (
    re.compile(r"^image \S+ is up to date$"),
    re.compile(r"^\w+ in \d+(\.\d+)?s$"),  # a base image "built in 52.1s"
)
WARN_PREFIXES = ("image kept", "not deregistered")
FAILED_PREFIXES = ("failed",)
FINISHED = {"removing": "removed", "stopping": "stopped"}  # in progress at a good end


@dataclass
class _Line:
    message: str
    at: float  # seconds since the view began, when the message came
    spinner: object | None = None


def outcome(message: str) -> str | None:
    """"ok", "warn" or "failed" for a message that ends its line; None while in progress."""
    if message in DONE_MESSAGES or message.startswith(DONE_PREFIXES) or any(
            pattern.match(message) for pattern in DONE_PATTERNS):
        return "ok"
    if message.startswith(WARN_PREFIXES):
        return "warn"
    if message.startswith(FAILED_PREFIXES):
        return "failed"
    return None


class LiveView:
    def __init__(
        self,
        title: str,
        console,
        *,
        verbose: bool = False,
        start_periods: Mapping[str, float] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.title = title
        self.console = console
        self.verbose = verbose
        self.start_periods = dict(start_periods or {})
        self.clock = clock
        self.lines: dict[str, _Line] = {}
        self.started: dict[str, float] = {}  # subject -> when its service (re)started
        self.start = clock()
        self.lock = threading.RLock()
        self.terminal = console.is_terminal
        self.live = None
        self.ended: str | None = None  # "ok" or "failed" once the work is over

    def __enter__(self) -> LiveView:
        if self.terminal:
            from rich.live import Live

            self.live = Live(console=self.console, refresh_per_second=8, transient=False,
                             get_renderable=self._render)
            self.live.__enter__()
        return self

    def __exit__(self, exc_type, *exc) -> None:
        with self.lock:
            self.ended = "ok" if exc_type is None else "failed"
        if self.live is not None:
            self.live.refresh()
            self.live.__exit__(exc_type, *exc)

    def abort(self) -> None:
        """End the view from another thread (the work was interrupted and is being left
        as it is): lines in progress are shown as they were, the terminal restored."""
        with self.lock:
            if self.ended is None:
                self.ended = "failed"
        if self.live is not None:
            self.live.stop()

    def __call__(self, subject: str, message: str) -> None:
        with self.lock:
            step = BUILD_STEP.match(message)
            if step and not self.verbose:
                if not self.terminal:
                    return  # a pipe gets no build steps
                message = f"building image, step {step.group(1)}/{step.group(2)}"
            now = self.clock()
            if message in STARTS:
                self.started[subject] = now
            previous = self.lines.get(subject)
            if previous is not None and previous.message == message:
                return
            self.lines[subject] = _Line(message, now - self.start,
                                        previous.spinner if previous else None)
            if not self.terminal and (self.verbose
                                      or not self._starting_normally(subject, message, now)):
                self.console.print(f"{subject:<14} {message}", markup=False, highlight=False,
                                   soft_wrap=True)
        if self.live is not None:
            self.live.refresh()  # outside the lock: the refresh thread renders under it

    def _starting_normally(self, subject: str, message: str, now: float) -> bool:
        """A check not passing yet while its service is within its start period."""
        if message not in CHECK_NOT_PASSING or subject not in self.started:
            return False
        return now - self.started[subject] < self.start_periods.get(subject, 0.0)

    def _mark(self, subject: str, line: _Line, now: float):
        """(mark, style, text) of one line: a spinner while in progress."""
        from rich.spinner import Spinner

        message, result = line.message, outcome(line.message)
        if message in CHECK_NOT_PASSING:
            if self._starting_normally(subject, message, now):
                message, style = f"waiting for checks ({message.split()[1]} so far)", "yellow"
            else:
                style = "red" if message == "check critical" else "yellow"
            if self.ended == "failed" and style == "red":
                result = "failed"
        else:
            style = {"ok": "green", "warn": "yellow", "failed": "red"}.get(result or "", "")
        if result is None and self.ended == "ok":
            result = "ok"
            verb, _, rest = message.partition(" ")
            message = " ".join(filter(None, (FINISHED.get(verb, verb), rest)))
        if result is None and self.ended == "failed":
            return "[dim]·[/]", "dim", message  # left as it was when the work stopped
        if result is None:
            if line.spinner is None:
                line.spinner = Spinner("dots")
            return line.spinner, style, message
        mark = {"ok": "[green]✓[/]", "warn": "[yellow]![/]", "failed": "[red]✗[/]"}[result]
        return mark, style, message

    def _render(self):
        from rich.markup import escape
        from rich.table import Table

        with self.lock:
            now = self.clock()
            table = Table.grid(padding=(0, 2))
            table.add_column(width=2)
            table.add_column(style="bold", no_wrap=True)
            table.add_column(no_wrap=True, overflow="ellipsis")
            table.add_column(style="dim", justify="right", no_wrap=True)
            for subject, line in self.lines.items():
                mark, style, message = self._mark(subject, line, now)
                text = escape(message)
                table.add_row(mark, escape(subject), f"[{style}]{text}[/]" if style else text,
                              f"{line.at:5.1f}s")
            return table
