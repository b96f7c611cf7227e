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


def render(report) -> None:
    from rich.table import Table

    from shopctl import console

    where = f"Prometheus, rate over {report.window}" if report.source == "prometheus" else (
        f"/metrics read twice, {report.window} apart")
    table = Table(title=f"metrics ({where})", title_justify="left")
    for column in ("service", "req/s", "errors/s", "errors", "p50", "p95", "breaker"):
        table.add_column(column, justify="left" if column in ("service", "breaker") else "right")
    for row in report.services:
        if not row.up:
            table.add_row(row.service, f"[dim]{row.problem or 'down'}[/]", "", "", "", "",
                          row.breaker or "")
            continue
        ratio = "-" if row.error_ratio is None else f"{row.error_ratio:.1%}"
        if row.error_ratio:
            ratio = f"[red]{ratio}[/]"
        breaker = row.breaker or "-"
        if row.breaker in BREAKER_STYLE:
            breaker = f"[{BREAKER_STYLE[row.breaker]}]{row.breaker}[/]"
        table.add_row(
            row.service, _number(row.request_rate, ".2f"), _number(row.error_rate, ".2f"), ratio,
            _number(row.p50_ms, ".1f") + (" ms" if row.p50_ms is not None else ""),
            _number(row.p95_ms, ".1f") + (" ms" if row.p95_ms is not None else ""),
            breaker,
        )
    console.out().print(table)


def register(app: typer.Typer) -> None:
    app.command()(metrics)
