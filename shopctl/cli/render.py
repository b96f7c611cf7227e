"""How data looks on a terminal: tables, plans, timelines, log prefixes.

Pure presentation: every function takes values from the core and prints them through
shopctl.console. JSON output never comes through here.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from shopctl import console

HEALTH_STYLE = {"passing": "green", "warning": "yellow", "critical": "red", "unknown": "dim"}
STATE_STYLE = {"running": "green", "starting": "yellow", "restarting": "yellow",
               "exited": "red", "missing": "dim"}
ACTION_STYLE = {"create": "green", "recreate": "yellow", "start": "cyan", "noop": "dim"}
PREFIX_COLOURS = ("cyan", "magenta", "green", "yellow", "blue", "bright_red", "bright_cyan",
                  "bright_magenta")


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def plan(plan, runtime: str) -> None:
    from rich.table import Table

    table = Table(title=f"plan ({runtime})", title_justify="left")
    table.add_column("service")
    table.add_column("action")
    table.add_column("why")
    for step in plan.steps:
        style = ACTION_STYLE[step.action.value]
        table.add_row(step.service, f"[{style}]{step.action.value}[/]", step.reason)
    console.out().print(table)
    changes = len(plan.changes)
    console.out().print(f"{changes} to change, {len(plan.steps) - changes} unchanged")


def status_table(rows, runtime: str):
    from rich.table import Table

    table = Table(title=f"{len(rows)} services ({runtime})", title_justify="left")
    rates = any(getattr(row, "request_rate", None) is not None for row in rows)
    columns = ("service", "kind", "state", "health", "address", "uptime", "restarts", "image")
    for column in columns + (("req/s",) if rates else ()):
        table.add_column(column, no_wrap=column in ("service", "address"),
                         justify="right" if column == "req/s" else "left")
    for row in rows:
        health = f"[{HEALTH_STYLE.get(row.health, '')}]{row.health}[/]"
        if row.health != "passing" and row.check_output:
            health += f"\n[dim]{row.check_output[:80]}[/]"
        cells = [
            row.name, row.kind,
            f"[{STATE_STYLE.get(row.state, '')}]{row.state}[/]",
            health,
            f"{row.address}:{row.port}" if row.address else (f":{row.port}" if row.port else "-"),
            duration(row.uptime_s), str(row.restarts), row.image or "-",
        ]
        if rates:
            cells.append("-" if row.request_rate is None else f"{row.request_rate:.2f}")
        table.add_row(*cells)
    return table


def status(rows, runtime: str) -> None:
    console.out().print(status_table(rows, runtime))


def watch_status(shop, interval: float = 2.0) -> None:
    from rich.live import Live

    from shopctl.metrics import with_request_rates

    def rows():
        return with_request_rates(shop.config, shop.status())[1]

    with Live(status_table(rows(), shop.runtime.name), console=console.out(),
              refresh_per_second=2) as live:
        try:
            while True:
                time.sleep(interval)
                live.update(status_table(rows(), shop.runtime.name))
        except KeyboardInterrupt:
            pass


def up_summary(result) -> None:
    status(result.rows, result.runtime)
    changed = len(result.plan.changes)
    console.out().print(
        f"[green]up[/] in {result.seconds:.1f}s: {changed} changed, "
        f"{len(result.plan.steps) - changed} unchanged"
    )


def probes(results) -> None:
    from rich.table import Table

    table = Table(title="health checks, run now", title_justify="left")
    for column in ("service", "status", "latency", "output"):
        table.add_column(column)
    for r in results:
        latency = "-" if r.latency_ms is None else f"{r.latency_ms:.1f} ms"
        table.add_row(r.service, f"[{HEALTH_STYLE.get(r.status, '')}]{r.status}[/]", latency,
                      r.output[:100])
    console.out().print(table)


def log_lines(lines: Iterable, services: list[str], as_json: bool) -> None:
    import json
    import sys

    from rich.markup import escape

    width = max((len(s) for s in services), default=8)
    colours = {name: PREFIX_COLOURS[i % len(PREFIX_COLOURS)] for i, name in enumerate(services)}
    out = console.out()
    try:
        for line in lines:
            if as_json:
                sys.stdout.write(json.dumps({"service": line.service, "ts": line.timestamp,
                                             "text": line.text}) + "\n")
                sys.stdout.flush()
            else:
                colour = colours.get(line.service, "white")
                out.print(f"[{colour}]{line.service:<{width}} |[/] {escape(line.text)}",
                          soft_wrap=True)
    except KeyboardInterrupt:
        pass
