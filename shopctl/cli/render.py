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


# status columns, most important first where it matters: service, state, health and
# address are never cut; the others go, least useful first, when the width is short.
STATUS_COLUMNS = ("service", "kind", "state", "health", "address", "node", "uptime",
                  "restarts", "image", "req/s")
DROPPED_FIRST = ("image", "uptime", "restarts", "req/s", "kind", "node")


def _count(rows) -> str:
    """"5 services", or "5 services, 7 instances" once some run several times."""
    services = len({getattr(row, "service", row.name) for row in rows})
    return f"{services} services" + (f", {len(rows)} instances" if len(rows) > services else "")


def _address(row) -> str:
    """address:port as Consul has it, and the host's port when that differs (a
    container's published port)."""
    host = getattr(row, "host_port", None)
    published = f" (host :{host})" if host and host != row.port else ""
    if row.address:
        return f"{row.address}:{row.port}{published}"
    return f":{row.port}{published}" if row.port else "-"


def _short_image(image: str) -> str:
    """shopctl-PROJECT/SERVICE:HASH -> HASH (the rest is the project and the row's name)."""
    repository, _, tag = image.rpartition(":")
    return tag if repository and "/" not in tag else image


def _status_cells(row, image: str) -> dict[str, str]:
    health = f"[{HEALTH_STYLE.get(row.health, '')}]{row.health}[/]"
    return {
        "service": row.name,
        "kind": row.kind,
        "state": f"[{STATE_STYLE.get(row.state, '')}]{row.state}[/]",
        "health": health,
        "address": _address(row),
        "node": getattr(row, "node", None) or "-",
        "uptime": duration(row.uptime_s),
        "restarts": str(row.restarts),
        "image": (row.image if image == "full" else _short_image(row.image)) if row.image else "-",
        "req/s": "-" if row.request_rate is None else f"{row.request_rate:.2f}",
    }


def _status_layouts(rates: bool, images: bool, nodes: bool = False):
    """(columns, image form) from the widest layout to the narrowest; a node column
    only when some instance has a node (a runtime of several hosts)."""
    columns = [c for c in STATUS_COLUMNS
               if (c != "req/s" or rates) and (c != "image" or images)
               and (c != "node" or nodes)]
    yield columns, "full"
    yield columns, "short"
    for dropped in DROPPED_FIRST:
        if dropped in columns:
            columns = [c for c in columns if c != dropped]
            yield columns, "short"


def _table(rows, runtime: str, columns, image: str, box=True):
    from rich import box as boxes
    from rich.table import Table

    table = Table(title=f"{_count(rows)} ({runtime})", title_justify="left",
                  **({} if box else {"box": boxes.SIMPLE_HEAD, "show_edge": False}))
    for column in columns:
        table.add_column(column, no_wrap=True, justify="right" if column == "req/s" else "left")
    for row in rows:
        cells = _status_cells(row, image)
        table.add_row(*(cells[c] for c in columns))
    return table


def _fits(table, width: int) -> bool:
    from rich.measure import Measurement

    out = console.out()
    # unclamped: the width the table takes with no cell cut or wrapped
    return Measurement.get(out, out.options.update(width=10_000), table).maximum <= width


def status_table(rows, runtime: str, width: int | None = None):
    """The widest layout of the table that fits `width` (the console's by default)
    without cutting a cell; below the narrowest one, a line a service."""
    width = console.out().width if width is None else width
    rates = any(getattr(row, "request_rate", None) is not None for row in rows)
    layouts = list(_status_layouts(rates, any(row.image for row in rows),
                                   any(getattr(row, "node", None) for row in rows)))
    for columns, image in layouts:
        table = _table(rows, runtime, columns, image)
        if _fits(table, width):
            return table
    columns, image = layouts[-1]
    table = _table(rows, runtime, columns, image, box=False)
    if _fits(table, width):
        return table
    from rich.console import Group
    from rich.text import Text

    lines = [Text(f"{_count(rows)} ({runtime})", style="italic")]
    for row in rows:
        cells = _status_cells(row, image)
        line = Text.from_markup(f"{row.name}: {cells['state']} {cells['health']} "
                                f"{cells['address']}")
        line.no_wrap, line.overflow = False, "fold"
        lines.append(line)
    return Group(*lines)


def worker_line(worker) -> str | None:
    """The saga worker's line of `status`: None when it is neither wanted nor running."""
    from rich.markup import escape

    if worker is None or (worker.state == "stopped" and not worker.enabled):
        return None
    if worker.state == "stopped":
        why = f"; last error: {escape(worker.last_error)}" if worker.last_error else ""
        return (f"saga worker: [red]stopped[/] (enabled in shop.yaml{why}); "
                "`shopctl up` starts it")
    ago = ("no pass yet" if worker.last_pass_ago is None
           else f"last pass {worker.last_pass_ago:.0f}s ago")
    counts = f"{worker.resumed} resumed, {worker.retried} retried"
    how = "" if worker.managed else ", run by hand"
    if worker.state == "stale":
        return (f"saga worker: [yellow]stale[/] (pid {worker.pid}, {ago}{how}): it is alive "
                f"but not working; its log: {escape(worker.log or '-')}")
    error = f"; last pass failed: {escape(worker.last_error)}" if worker.last_error else ""
    return f"saga worker: [green]running[/] (pid {worker.pid}, {ago}, {counts}{how}){error}"


def infra_line(infra) -> str | None:
    """`infra: consul running, rabbitmq running, postgres running`: None without any."""
    from rich.markup import escape

    if not infra:
        return None
    parts = []
    for row in infra:
        style = "green" if row.state == "running" else "red"
        where = f" on {escape(row.node)}" if row.node else ""
        parts.append(f"{escape(row.name)} [{style}]{escape(row.state)}[/]{where}")
    return "infra: " + ", ".join(parts)


def status_view(rows, runtime: str, project: str, width: int | None = None, worker=None,
                infra=None):
    """What `status` prints: one line when nothing of the project exists, else the table,
    then one line for an unreachable Consul, one a failing check, one for shopctl's
    infra and one for the saga worker."""
    from rich.console import Group
    from rich.markup import escape
    from rich.text import Text

    from shopctl.status import CONSUL_UNREACHABLE, summarize

    summary = summarize(project, rows)
    worker_text = worker_line(worker)
    if summary.nothing_present and (worker is None or worker.state == "stopped"):
        if summary.consul == "reachable":
            line = (f"no service of project {project!r} runs (its Consul answers); "
                    "`shopctl up` starts them")
        else:
            line = f"nothing of project {project!r} runs; `shopctl up` starts it"
        return Text(line)
    parts: list = [status_table(rows, runtime, width)]
    if summary.consul == "unreachable":
        parts.append(Text.from_markup(
            "[yellow]Consul is not reachable[/]: health unknown; `shopctl up` brings it back"))
    for row in rows:
        output = (row.check_output or "").strip().splitlines()
        if (row.state == "running" and row.health not in ("passing", "unknown") and output
                and output[0] != CONSUL_UNREACHABLE):
            style = HEALTH_STYLE.get(row.health, "")
            parts.append(Text.from_markup(f"[{style}]{escape(row.name)}[/]: "
                                          f"[dim]{escape(output[0][:200])}[/]"))
    if any(row.state in ("missing", "exited") for row in rows):
        parts.append(Text("`shopctl up` starts what does not run"))
    for text in (infra_line(infra), worker_text):
        if not text:
            continue
        line = Text.from_markup(text)
        line.no_wrap, line.overflow = False, "fold"
        parts.append(line)
    return Group(*parts)


def status(rows, runtime: str, project: str = "", worker=None, infra=None) -> None:
    console.out().print(status_view(rows, runtime, project, worker=worker, infra=infra))


def watch_status(shop, interval: float = 2.0) -> None:
    from rich.live import Live

    from shopctl.metrics import with_request_rates

    def view():
        rows = with_request_rates(shop.config, shop.status())[1]
        return status_view(rows, shop.runtime.name, shop.config.project,
                           worker=shop.worker(), infra=shop.infra())

    with Live(view(), console=console.out(), refresh_per_second=2) as live:
        try:
            while True:
                time.sleep(interval)
                live.update(view())
        except KeyboardInterrupt:
            pass


def up_summary(result, project: str = "") -> None:
    status(result.rows, result.runtime, project,
           worker=result.worker.status if result.worker else None)
    changed = len(result.plan.changes)
    console.out().print(
        f"[green]up[/] in {result.seconds:.1f}s: {changed} changed, "
        f"{len(result.plan.steps) - changed} unchanged"
    )


def probes(results) -> None:
    from rich.table import Table

    table = Table(title="health checks, run now", title_justify="left")
    for column in ("service", "status", "latency", "output"):
        # the output wraps; the service, its status and the latency are never cut
        table.add_column(column, no_wrap=column != "output")
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
                # a service's instances (SERVICE.N) share its colour
                name = line.service.partition("@")[0]  # swarm: INSTANCE@NODE
                colour = colours.get(name) or colours.get(name.rpartition(".")[0], "white")
                out.print(f"[{colour}]{line.service:<{width}} |[/] {escape(line.text)}",
                          soft_wrap=True)
    except KeyboardInterrupt:
        pass
