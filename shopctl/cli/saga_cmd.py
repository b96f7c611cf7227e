"""`shopctl saga ...`: run and inspect distributed sagas.

Exit codes of run/resume/retry: 0 completed, 1 failed and compensated, 3 stuck (an
operator must look; `saga retry ID` picks it up again).
"""

from __future__ import annotations

from typing import Annotated

import typer

from shopctl.cli.context import app_context

app = typer.Typer(help="Run and inspect the sagas declared in shop.yaml.",
                  no_args_is_help=True, rich_markup_mode=None)

JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
ForceOption = Annotated[bool, typer.Option(
    "--force", help="Take a saga over even when another process seems to drive it; only "
                    "for a driver known to be gone (e.g. one on another host).")]
EXIT_BY_STATUS = {"completed": 0, "compensated": 1, "stuck": 3}


def _engine(ctx: typer.Context, on_event=None):
    from shopctl.saga.session import open_project_engine

    config = app_context(ctx).config
    return config, open_project_engine(config, on_event=on_event,
                                       on_unpublished=_warn_unpublished)


def _warn_unpublished(count: int, error: str | None) -> None:
    from shopctl import console

    console.notice(f"{count} saga event(s) not yet published to RabbitMQ"
                   + (f" ({error})" if error else "")
                   + "; they are kept in the saga log and sent by the next `shopctl saga` "
                     "run, resume or retry")


def _open_log(ctx: typer.Context):
    from shopctl.saga.store import open_project_log

    return open_project_log(app_context(ctx).config)


def _saga_config(config, name: str):
    from shopctl.config.problems import did_you_mean
    from shopctl.errors import UsageError

    if name not in config.sagas:
        raise UsageError(f"no saga named {name!r} in {config.source.name}",
                         hint=did_you_mean(name, config.sagas)
                         or f"sagas: {', '.join(config.sagas) or 'none'}")
    return config.sagas[name]


def _read_input(pairs: list[str], input_file: str | None) -> dict:
    """--input-file first, then each --input over it."""
    import sys
    from pathlib import Path

    from shopctl.errors import UsageError
    from shopctl.saga import inputs

    given: dict = {}
    if input_file is not None:
        if input_file == "-":
            given = inputs.parse_document(sys.stdin.read(), "stdin")
        else:
            try:
                text = Path(input_file).read_text()
            except OSError as exc:
                raise UsageError(f"--input-file {input_file}: {exc.strerror}") from None
            given = inputs.parse_document(text, input_file)
    return {**given, **inputs.parse_pairs(pairs)}


def _finish(saga, json: bool, events=None) -> None:
    from shopctl import console
    from shopctl.cli import saga_render

    if json:
        console.print_json({**saga.to_dict(), "events": [e.to_dict() for e in events or []]})
    else:
        saga_render.outcome(saga)
    raise typer.Exit(EXIT_BY_STATUS.get(saga.status, 1))


@app.command()
def run(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The saga in shop.yaml.")],
    input_: Annotated[list[str] | None, typer.Option(
        "--input", "-i", help="KEY=VALUE, repeatable; a VALUE that parses as JSON is JSON "
                              "(e.g. qty=2, 'items=[{\"id\": 1}]').")] = None,
    input_file: Annotated[str | None, typer.Option(
        "--input-file", help="A JSON or YAML mapping of input keys ('-': stdin); "
                             "--input values override it.")] = None,
    idempotency_key: Annotated[str | None, typer.Option(
        "--idempotency-key", help="The same key again returns the first saga.")] = None,
    fail_at: Annotated[str | None, typer.Option(
        "--fail-at", help="Chaos: fail this step for good (watch the compensation).")] = None,
    json: JsonOption = False,
) -> None:
    """Run a saga against the running services, with a live step timeline."""
    from shopctl.cli import saga_render
    from shopctl.saga import inputs
    from shopctl.saga.engine import snapshot

    config = app_context(ctx).config
    _saga_config(config, name)
    given = _read_input(input_ or [], input_file)
    definition = snapshot(config, name)
    live = None if json else saga_render.LiveTimeline(None)
    _, opened = _engine(ctx)
    with opened as engine:
        existing = engine.log.by_key(idempotency_key) if idempotency_key else None
        if existing is None:
            values = inputs.check(name, definition["input"], given)
        else:
            values = existing.input  # the first run's input decides; this is a repeat
        if live is not None:
            live.log = engine.log
            engine.on_event = live.on_event
            with live:
                saga, _ = engine.start(name, definition, values,
                                       idempotency_key=idempotency_key, fail_at=fail_at)
        else:
            saga, _ = engine.start(name, definition, values, idempotency_key=idempotency_key,
                                   fail_at=fail_at)
        _finish(saga, json, engine.log.events(saga.id) if json else None)


@app.command()
def check(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The saga in shop.yaml.")],
    json: JsonOption = False,
) -> None:
    """Resolve every step of a saga against the running services (nothing is called that
    changes state); exit 1 naming what is missing."""
    from shopctl import console
    from shopctl.cli import saga_render
    from shopctl.saga.check import check_saga
    from shopctl.saga.endpoints import discover
    from shopctl.saga.engine import snapshot

    config = app_context(ctx).config
    _saga_config(config, name)
    definition = snapshot(config, name)
    results = check_saga(definition, discover(config), config.root / "protos")
    if json:
        console.print_json({"saga": name, "ok": all(r.ok for r in results),
                            "input": definition["input"],
                            "calls": [r.to_dict() for r in results]})
    else:
        saga_render.check_table(name, definition, results)
    missing = [r for r in results if not r.ok]
    if missing:
        if not json:
            console.error("saga " + name + " cannot run: "
                          + "; ".join(f"{r.call} ({r.detail})" for r in missing))
        raise typer.Exit(1)


@app.command("list")
def list_(
    ctx: typer.Context,
    status: Annotated[str | None, typer.Option("--status", help="Only this status.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1)] = 50,
    json: JsonOption = False,
) -> None:
    """Sagas, newest first, with their status and reason."""
    from shopctl import console
    from shopctl.cli import saga_render
    from shopctl.errors import UsageError
    from shopctl.saga.log import STATUSES

    if status is not None and status not in STATUSES:
        raise UsageError(f"--status {status!r}: expected one of {', '.join(STATUSES)}")
    with _open_log(ctx) as log:
        sagas = log.list(status, limit)
    if json:
        console.print_json([s.to_dict() for s in sagas])
    else:
        saga_render.saga_list(sagas)


@app.command()
def show(ctx: typer.Context, saga_id: Annotated[str, typer.Argument(metavar="ID")],
         json: JsonOption = False) -> None:
    """One saga's timeline: timestamps, durations, errors, compensation results."""
    from shopctl import console
    from shopctl.cli import saga_render

    with _open_log(ctx) as log:
        saga = _get(log, saga_id)
        events = log.events(saga.id)
        outbox = log.outbox(saga.id)
    if json:
        console.print_json({**saga.to_dict(), "events": [e.to_dict() for e in events],
                            "outcome_events": [e.to_dict() for e in outbox]})
    else:
        saga_render.saga_detail(saga, events, outbox)


def _get(log, saga_id: str):
    from shopctl.errors import UsageError

    try:
        return log.get(saga_id)
    except KeyError:
        raise UsageError(f"no saga {saga_id!r}", hint="see `shopctl saga list`") from None


@app.command()
def resume(
    ctx: typer.Context,
    saga_id: Annotated[str | None, typer.Argument(metavar="[ID]")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every unfinished saga.")] = False,
    force: ForceOption = False,
    json: JsonOption = False,
) -> None:
    """Continue unfinished sagas from their log (forward when possible, else compensate).
    A saga another live process is running is left to it (with --all) or refused."""
    from shopctl import console
    from shopctl.cli import saga_render
    from shopctl.errors import UsageError

    if bool(saga_id) == all_:
        raise UsageError("give a saga ID or --all")
    _, opened = _engine(ctx)
    with opened as engine:
        if saga_id:
            sagas, busy = [engine.resume(_get(engine.log, saga_id).id, force=force)], []
        else:
            sagas, busy = engine.resume_all(force=force)
    if json:
        console.print_json([s.to_dict() for s in sagas])
    else:
        for saga in sagas:
            saga_render.outcome(saga)
        for refused in busy:
            console.notice(f"{refused.message}: left to it")
        if not sagas and not busy:
            console.out().print("no unfinished sagas")
    raise typer.Exit(max((EXIT_BY_STATUS.get(s.status, 1) for s in sagas), default=0))


@app.command()
def abort(
    ctx: typer.Context,
    saga_id: Annotated[str, typer.Argument(metavar="ID")],
    yes: Annotated[bool, typer.Option(
        "--yes", help="Abort a saga flagged after a reboot although its log may be short.")
    ] = False,
    force: ForceOption = False,
    json: JsonOption = False,
) -> None:
    """Give up on a stuck saga whose failing step will never pass: compensate, in
    reverse, every step its log records as applied (past the pivot too)."""
    from shopctl.errors import UsageError

    _, opened = _engine(ctx)
    with opened as engine:
        saga = _get(engine.log, saga_id)
        if saga.after_reboot and not yes:
            raise UsageError(
                f"saga {saga.id} was interrupted by a reboot: its log may lack steps that "
                f"ran, and abort undoes only the steps the log records",
                hint="prefer `shopctl saga retry " + saga.id + "` (forward is safe); if the "
                     "step can never pass, check the services' state by hand and abort "
                     "with --yes")
        saga = engine.abort(saga.id, force=force)
        _finish(saga, json, engine.log.events(saga.id) if json else None)


@app.command()
def worker(
    ctx: typer.Context,
    interval: Annotated[float, typer.Option(
        "--interval", min=0.1, help="Seconds between passes.")] = 5.0,
    retry_stuck_after: Annotated[float, typer.Option(
        "--retry-stuck-after", min=0.0,
        help="Retry a saga stuck by an outage once it has been stuck this long (s).")] = 60.0,
    once: Annotated[bool, typer.Option("--once", help="One pass, then exit.")] = False,
    managed: Annotated[bool, typer.Option("--managed", hidden=True)] = False,
    json: JsonOption = False,
) -> None:
    """Keep the project's sagas moving without anyone typing a command: continue sagas
    whose driver is gone, retry those stuck by an outage, and send the outbox's events
    as they come. Ctrl+C (or SIGTERM) stops it between passes. `up` runs one beside the
    shop when shop.yaml has `saga_worker: {enabled: true}`; `status` shows it."""
    import signal
    import threading

    from shopctl import console
    from shopctl.saga.worker import run

    def said(how: str, saga) -> None:
        if json:
            console.print_json_line({"action": how, **saga.to_dict()})
        else:
            console.out().print(f"{how} saga {saga.id} ({saga.name}): {saga.status}",
                                markup=False)

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    config, opened = _engine(ctx)
    with opened as engine:
        run(engine, config, interval=interval, retry_stuck_after=retry_stuck_after,
            stop_event=stop, once=once, managed=managed, on_saga=said)


@app.command()
def retry(ctx: typer.Context, saga_id: Annotated[str, typer.Argument(metavar="ID")],
          force: ForceOption = False, json: JsonOption = False) -> None:
    """Pick up a stuck saga again (forward after its pivot, else its compensations)."""
    _, opened = _engine(ctx)
    with opened as engine:
        saga = engine.retry(_get(engine.log, saga_id).id, force=force)
        _finish(saga, json, engine.log.events(saga.id) if json else None)
