"""`shopctl metrics [SERVICE]`: request and error rates, latency and breaker state."""

from __future__ import annotations

from typing import Annotated

import typer

from shopctl.cli.context import app_context


def metrics(
    ctx: typer.Context,
    service: Annotated[str | None, typer.Argument(help="One service; default all.")] = None,
    source: Annotated[
        str,
        typer.Option("--source", help="auto (Prometheus when it answers, else each "
                     "service's /metrics), prometheus, or scrape.", case_sensitive=False),
    ] = "auto",
    window: Annotated[str, typer.Option("--window", help="Prometheus rate window.")] = "1m",
    interval: Annotated[
        float, typer.Option("--interval", help="Seconds between the two reads of /metrics "
                            "when there is no Prometheus.")
    ] = 2.0,
    json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Per service: requests/s, server errors/s and share, p50/p95 latency, breaker state.

    Health-check requests are not counted. From Prometheus: rates over --window. Without
    it: the difference between two reads of each /metrics, --interval seconds apart."""
    from shopctl import console
    from shopctl.errors import UsageError
    from shopctl.metrics import collect

    source = source.lower()
    if source not in ("auto", "prometheus", "scrape"):
        raise UsageError(f"unknown source {source!r}: choose auto, prometheus or scrape")
    report = collect(app_context(ctx).config, service, source=source,  # type: ignore[arg-type]
                     window=window, interval=interval)
    if json:
        console.print_json(report.to_dict())
    else:
        render(report)


def _number(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


BREAKER_STYLE = {"closed": "green", "open": "red", "half_open": "yellow"}


METRIC_COLUMNS = ("service", "req/s", "errors/s", "errors", "p50", "p95", "breaker")
DROPPED_FIRST = ("p50", "errors/s", "breaker", "p95")  # when the width is short


def _cells(row) -> dict[str, str]:
    if not row.up:
        return {"service": row.service, "req/s": "[dim]down[/]",
                "breaker": row.breaker or ""} | dict.fromkeys(
                    ("errors/s", "errors", "p50", "p95"), "")
    ratio = "-" if row.error_ratio is None else f"{row.error_ratio:.1%}"
    if row.error_ratio:
        ratio = f"[red]{ratio}[/]"
    breaker = row.breaker or "-"
    if row.breaker in BREAKER_STYLE:
        breaker = f"[{BREAKER_STYLE[row.breaker]}]{row.breaker}[/]"
    return {
        "service": row.service,
        "req/s": _number(row.request_rate, ".2f"),
        "errors/s": _number(row.error_rate, ".2f"),
        "errors": ratio,
        "p50": _number(row.p50_ms, ".1f") + (" ms" if row.p50_ms is not None else ""),
        "p95": _number(row.p95_ms, ".1f") + (" ms" if row.p95_ms is not None else ""),
        "breaker": breaker,
    }


def table(report, width: int):
    """The widest table that fits `width` with no cell cut; why a service has no figures
    goes below it, a line each, not into a cell."""
    from rich.console import Group
    from rich.markup import escape
    from rich.measure import Measurement
    from rich.table import Table
    from rich.text import Text

    from shopctl import console

    where = f"Prometheus, rate over {report.window}" if report.source == "prometheus" else (
        f"/metrics read twice, {report.window} apart")
    rows = [_cells(row) for row in report.services]
    out = console.out()
    columns = list(METRIC_COLUMNS)
    while True:
        made = Table(title=f"metrics ({where})", title_justify="left")
        for column in columns:
            made.add_column(column, no_wrap=True,
                            justify="left" if column in ("service", "breaker") else "right")
        for cells in rows:
            made.add_row(*(cells[c] for c in columns))
        needed = Measurement.get(out, out.options.update(width=10_000), made).maximum
        dropped = [c for c in DROPPED_FIRST if c in columns]
        if needed <= width or not dropped:
            break
        columns.remove(dropped[0])
    notes = [Text.from_markup(f"{escape(row.service)}: [dim]{escape(row.problem)}[/]")
             for row in report.services if not row.up and row.problem]
    return Group(made, *notes)


def render(report) -> None:
    from shopctl import console

    console.out().print(table(report, console.out().width))


def register(app: typer.Typer) -> None:
    app.command()(metrics)
