"""How sagas look on a terminal: the live step timeline, the list, one saga's history.

Pure presentation over shopctl.saga.log records; JSON output never comes through here.
"""

from __future__ import annotations

import time
from datetime import datetime

from shopctl import console

SAGA_STYLE = {"running": "cyan", "compensating": "yellow", "completed": "green",
              "compensated": "yellow", "stuck": "bold red"}
STEP_STYLE = {"started": "cyan", "succeeded": "green", "failed": "red",
              "compensating": "yellow", "compensated": "yellow",
              "compensation_failed": "bold red"}


def seconds(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f}ms" if value < 1 else f"{value:.2f}s"


def clock(at: float) -> str:
    return datetime.fromtimestamp(at).strftime("%H:%M:%S.%f")[:-3]


def _service(saga, step: str) -> str:
    for s in saga.definition["steps"]:
        if s["name"] == step:
            return s["call"].split(".")[0]
    return "?"


def step_rows(saga, events) -> list[tuple[str, str, str, float | None]]:
    """(step, service, state, duration): the latest state of each step and phase."""
    rows: dict[tuple[str, bool], tuple] = {}
    for e in events:
        phase = e.state in ("compensating", "compensated", "compensation_failed")
        rows[(e.step, phase)] = (e.step if not phase else f"undo {e.step}",
                                 _service(saga, e.step), e.state, e.duration)
    return list(rows.values())


def timeline_table(saga, events, title: str | None = None):
    from rich.table import Table

    table = Table(title=title or f"saga {saga.id}", title_justify="left")
    for column in ("step", "service", "state", "duration"):
        table.add_column(column)
    for step, service, state, duration in step_rows(saga, events):
        table.add_row(step, service, f"[{STEP_STYLE.get(state, '')}]{state}[/]",
                      seconds(duration))
    return table


class LiveTimeline:
    """A rich Live table redrawn on every committed step transition (engine on_event)."""

    def __init__(self, log):
        self.log = log
        self.live = None
        self.saga = None

    def __enter__(self) -> LiveTimeline:
        from rich.live import Live

        self.live = Live(console=console.out(), auto_refresh=False, transient=False)
        self.live.__enter__()
        return self

    def __exit__(self, *exc_info) -> None:
        self.live.__exit__(*exc_info)
        if not self.live.console.is_terminal:
            # Off a terminal the last frame ends without a newline; what follows the
            # timeline (the outcome) would be glued to the table's bottom border.
            self.live.console.line()

    def on_event(self, event) -> None:
        saga = self.log.get(event.saga_id)
        self.live.update(timeline_table(saga, self.log.events(saga.id)), refresh=True)


def outcome(saga) -> None:
    style = SAGA_STYLE.get(saga.status, "")
    line = f"saga {saga.id}: [{style}]{saga.status}[/]"
    console.out().print(line)
    if saga.error:
        from rich.markup import escape

        console.out().print(f"  reason: {escape(saga.error)}")


def saga_list(sagas) -> None:
    from rich.table import Table

    table = Table(title=f"{len(sagas)} sagas", title_justify="left")
    for column in ("id", "name", "status", "started", "age", "reason"):
        table.add_column(column, no_wrap=column in ("id", "started"))
    now = time.time()
    for s in sagas:
        table.add_row(s.id, s.name, f"[{SAGA_STYLE.get(s.status, '')}]{s.status}[/]",
                      datetime.fromtimestamp(s.created_at).strftime("%Y-%m-%d %H:%M:%S"),
                      seconds(now - s.created_at), (s.error or "")[:80])
    console.out().print(table)


def saga_detail(saga, events, outbox=()) -> None:
    from rich.markup import escape
    from rich.table import Table

    outcome(saga)
    console.out().print(f"  key: {escape(saga.idempotency_key)}"
                        + (f"   fail-at: {saga.fail_at}" if saga.fail_at else ""))
    if saga.after_reboot:
        console.out().print("  [yellow]taken over after a reboot:[/] its log may lack the "
                            "last steps that ran, so it goes forward, never compensates "
                            "on a failure that may pass")
    table = Table(title="timeline", title_justify="left")
    for column in ("#", "at", "step", "service", "state", "try", "duration", "detail"):
        table.add_column(column)
    for e in events:
        detail = e.error.get("message", "") if e.error else (
            ", ".join(f"{k}={v}" for k, v in (e.result or {}).items()))
        table.add_row(str(e.seq), clock(e.at), e.step, _service(saga, e.step),
                      f"[{STEP_STYLE.get(e.state, '')}]{e.state}[/]", str(e.attempt),
                      seconds(e.duration), escape(detail[:90]))
    console.out().print(table)
    for event in outbox:
        if event.published_at is not None:
            state = f"[green]published[/] {clock(event.published_at)}"
        else:
            state = f"[yellow]not yet published[/] ({event.attempts} attempts" + (
                f", last error: {escape(event.last_error)}" if event.last_error else "") + ")"
        console.out().print(f"  event {event.event_type} ({event.event_id}): {state}")


def check_table(name: str, definition, results) -> None:
    """`saga check`: the plan, one row per call, and what each call goes to."""
    from rich.markup import escape
    from rich.table import Table

    inputs = definition.get("input") or {}
    if inputs:
        wanted = ", ".join(f"{k}: {v.get('type', 'any')}"
                           + ("" if v.get("required", True) and v.get("default") is None
                              else " (optional)") for k, v in inputs.items())
        console.out().print(f"input: {escape(wanted)}")
    table = Table(title=f"saga {name}", title_justify="left")
    for column in ("step", "phase", "call", "kind", "contract", "target", "check"):
        table.add_column(column)
    for r in results:
        mark = "[green]ok[/]" if r.ok else "[bold red]missing[/]"
        table.add_row(r.step, r.phase, r.call, r.kind,
                      "declared" if r.declared else "convention", escape(r.target),
                      f"{mark} {escape(r.detail)}")
    console.out().print(table)
