"""A live per-service view for long work (`up`, `down`): one line a service, updated
in place on a terminal, plain appended lines otherwise (CI logs, pipes)."""

from __future__ import annotations

import threading
import time

STYLES = {
    "healthy": "green", "unchanged": "green", "running": "green", "removed": "dim",
    "failed": "red", "check critical": "red", "check warning": "yellow",
}


class LiveView:
    def __init__(self, title: str, console):
        self.title = title
        self.console = console
        self.lines: dict[str, tuple[str, float]] = {}
        self.start = time.monotonic()
        self.lock = threading.Lock()
        self.live = None

    def __enter__(self) -> LiveView:
        if self.console.is_terminal:
            from rich.live import Live

            self.live = Live(
                self._render(), console=self.console, refresh_per_second=8, transient=False
            )
            self.live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.live is not None:
            self.live.update(self._render())
            self.live.__exit__(*exc)

    def __call__(self, subject: str, message: str) -> None:
        with self.lock:
            self.lines[subject] = (message, time.monotonic() - self.start)
            if self.live is not None:
                self.live.update(self._render())
            else:
                self.console.print(f"{subject:<14} {message}", markup=False, highlight=False)

    def _render(self):
        from rich.spinner import Spinner
        from rich.table import Table

        table = Table.grid(padding=(0, 2))
        table.add_column(width=2)
        table.add_column(style="bold")
        table.add_column()
        table.add_column(style="dim", justify="right")
        for subject, (message, at) in self.lines.items():
            style = STYLES.get(message, "")
            done = style in ("green", "dim", "red")
            mark = ("✓" if style != "red" else "✗") if done else Spinner("dots")
            text = f"[{style}]{message}[/]" if style else message
            table.add_row(mark, subject, text, f"{at:5.1f}s")
        return table
