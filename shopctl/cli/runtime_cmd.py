"""`shopctl up / down / status / health / logs`: the shop's lifecycle and its view."""

from __future__ import annotations

from typing import Annotated

import typer

from shopctl.cli.context import app_context

JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
RuntimeOption = Annotated[
    str,
    typer.Option("--runtime", "-r",
                 help="docker, local, swarm, or auto (docker when an engine answers).",
                 case_sensitive=False),
]


def _check_runtime(value: str) -> str:
    from shopctl.errors import UsageError
    from shopctl.runtime.select import CHOICES

    value = value.lower()
    if value not in CHOICES:
        raise UsageError(f"unknown runtime {value!r}: choose one of {', '.join(CHOICES)}")
    return value


def _shop(ctx: typer.Context, runtime: str):
    from shopctl import console
    from shopctl.shop import Shop

    shop = Shop.open(app_context(ctx).config, _check_runtime(runtime))
    if shop.notice:
        console.notice(shop.notice)
    return shop


def up(
    ctx: typer.Context,
    services: Annotated[
        list[str] | None,
        typer.Argument(help="Services to bring up (with their dependencies); default all."),
    ] = None,
    runtime: RuntimeOption = "auto",
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Print the plan and change nothing."),
    ] = False,
    json: JsonOption = False,
) -> None:
    """Build, start and register the services, and wait until every check passes."""
    from shopctl import console
    from shopctl.cli import render
    from shopctl.cli.interrupt import Interrupts
    from shopctl.cli.live import LiveView

    shop = _shop(ctx, runtime)
    if not shop.config.services:
        console.notice(f"{shop.config.source.name} has no services yet: add one with "
                       "`shopctl scaffold new-service NAME --kind flask|fastapi|nameko|grpc`")
    if dry_run:
        plan = shop.plan(services)
        if json:
            console.print_json({"runtime": shop.runtime.name, "plan": plan.to_dict()})
        else:
            render.plan(plan, shop.runtime.name)
        return
    start_periods = {name: svc.health.start_period for name, svc in shop.config.services.items()}
    with Interrupts(lambda: _say_interrupted(shop)) as interrupts:
        try:
            with LiveView(f"up ({shop.runtime.name})", console.err(),
                          verbose=app_context(ctx).verbose, start_periods=start_periods) as view:
                interrupts.view = view
                result = shop.up(services, progress=view, cancel=interrupts.cancel)
        except Exception:
            if not interrupts.cancel.is_set():
                raise
            # Cancelled, or a failure the interruption caused: the interruption is the news.
        if interrupts.cancel.is_set():
            interrupts.finish()  # says what runs, exits 130 (SIGINT) or 143 (SIGTERM)
    if json:
        console.print_json(result.to_dict())
    else:
        render.up_summary(result, shop.config.project)


def _say_interrupted(shop) -> None:
    """The one line an interrupted `up` leaves: what of the project runs, and how to
    remove it or go on."""
    from shopctl import console

    try:
        running = shop.running()
    except Exception:  # noqa: BLE001 - the runtime may not answer; say what is known
        running = None
    if running is None:
        what = "some of the project may be running"
    elif running:
        what = f"running now: {', '.join(running)}"
    else:
        what = f"nothing of project {shop.config.project!r} runs"
    tail = ("; `shopctl down` removes them (`shopctl up` goes on)" if running is None or running
            else "")
    console.err().print(f"interrupted: {what}{tail}", markup=False, highlight=False,
                        soft_wrap=True)


def down(
    ctx: typer.Context,
    volumes: Annotated[
        bool,
        typer.Option("--volumes", help="Also delete the services' data."),
    ] = False,
    rmi: Annotated[
        bool,
        typer.Option("--rmi", help="Also remove the images shopctl built for this project's "
                     "services (never base images, never another project's). The local "
                     "runtime builds no images: there it does nothing."),
    ] = False,
    runtime: RuntimeOption = "auto",
) -> None:
    """Stop and remove the project's services, infra and network; deregister from Consul."""
    from shopctl import console
    from shopctl.cli.live import LiveView

    shop = _shop(ctx, runtime)
    found: list[tuple[str, str]] = []  # what the runtime reported stopping or removing

    with LiveView("down", console.err(), verbose=app_context(ctx).verbose) as view:
        def progress(subject: str, message: str) -> None:
            if not _nothing_done(subject, message):
                found.append((subject, message))
            view(subject, message)

        shop.down(volumes=volumes, images=rmi, progress=progress)
    project = shop.config.project
    if not found:
        console.out().print(f"[green]down[/]: nothing of project {project!r} to remove")
        return
    console.out().print(f"[green]down[/]: project {project!r} removed"
                        + (" with its data" if volumes else " (data kept; --volumes deletes it)"))


def _nothing_done(subject: str, message: str) -> bool:
    """News of `down` that removes nothing: a Consul that held none of the project's
    services (or could not be asked)."""
    return subject == "consul" and (message == "deregistered 0 services"
                                    or message.startswith("not deregistered"))


def status(
    ctx: typer.Context,
    runtime: RuntimeOption = "auto",
    json: JsonOption = False,
    watch: Annotated[
        bool,
        typer.Option("--watch", "-w", help="Refresh every 2 s until Ctrl-C."),
    ] = False,
) -> None:
    """One row a service: state, Consul health, address, uptime, restarts, image (the
    columns that do not fit the width are left out; state, health and address never
    are), then a line for shopctl's infra and the saga worker's line. One line when
    nothing of the project runs. Exits 0 only when every service is healthy and the saga
    worker, if enabled, works."""
    from shopctl import console
    from shopctl.cli import render

    shop = _shop(ctx, runtime)
    if watch and not json:
        render.watch_status(shop)
        return
    from shopctl.metrics import with_request_rates
    from shopctl.status import summarize

    rates_from, rows = with_request_rates(shop.config, shop.status())
    worker = shop.worker()
    infra = shop.infra()
    if json:
        images_mode = getattr(shop.runtime, "images_mode", None)  # the swarm's only
        console.print_json({"runtime": shop.runtime.name,
                            **({"images": images_mode(shop.config)} if images_mode else {}),
                            **summarize(shop.config.project, rows).to_dict(),
                            "request_rate_from": rates_from,
                            "services": [r.to_dict() for r in rows],
                            "infra": [r.to_dict() for r in infra],
                            "saga_worker": worker.to_dict()})
    else:
        render.status(rows, shop.runtime.name, shop.config.project, worker=worker,
                      infra=infra)
    if not all(r.healthy for r in rows) or not worker.healthy:
        raise typer.Exit(1)


def health(
    ctx: typer.Context,
    services: Annotated[
        list[str] | None,
        typer.Argument(help="Services to check; default all."),
    ] = None,
    runtime: RuntimeOption = "auto",
    json: JsonOption = False,
) -> None:
    """Run every service's health check now and show each result with its latency."""
    from shopctl import console
    from shopctl.cli import render

    shop = _shop(ctx, runtime)
    results = shop.probe(services)
    if json:
        console.print_json([r.to_dict() for r in results])
    else:
        render.probes(results)
    if not all(r.status == "passing" for r in results):
        raise typer.Exit(1)


def logs(
    ctx: typer.Context,
    services: Annotated[
        list[str] | None,
        typer.Argument(help="Services to show; default all."),
    ] = None,
    follow: Annotated[
        bool,
        typer.Option("--follow", "-f", help="Keep printing new lines."),
    ] = False,
    tail: Annotated[
        int | None,
        typer.Option("--tail", "-n", help="Lines per service to start with."),
    ] = None,
    runtime: RuntimeOption = "auto",
    json: JsonOption = False,
) -> None:
    """Logs of the services, interleaved, each line prefixed by its service."""
    from shopctl.cli import render

    shop = _shop(ctx, runtime)
    render.log_lines(
        shop.logs(services, follow=follow, tail=tail), list(shop.config.services), json
    )


def scale(
    ctx: typer.Context,
    assignments: Annotated[
        list[str],
        typer.Argument(help="SERVICE=N pairs: how many instances each service runs.",
                       metavar="SERVICE=N"),
    ],
    runtime: RuntimeOption = "auto",
    json: JsonOption = False,
) -> None:
    """Run N instances of a service: `replicas: N` is written into shop.yaml (comments
    kept), then only that service's instances are started or removed; the others are
    left alone. The first instance keeps the service's declared host port; the others
    listen on free ports, registered in Consul and shown by `status`."""
    from shopctl import console
    from shopctl.cli import render
    from shopctl.cli.interrupt import Interrupts
    from shopctl.cli.live import LiveView
    from shopctl.scale import parse_assignments

    shop = _shop(ctx, runtime)
    wanted = parse_assignments(shop.config, assignments)
    with Interrupts(lambda: _say_interrupted(shop)) as interrupts:
        try:
            with LiveView(f"scale ({shop.runtime.name})", console.err(),
                          verbose=app_context(ctx).verbose) as view:
                interrupts.view = view
                changes, result = shop.scale(wanted, progress=view, cancel=interrupts.cancel)
        except Exception:
            if not interrupts.cancel.is_set():
                raise
        if interrupts.cancel.is_set():
            interrupts.finish()
    if json:
        console.print_json({"scaled": [c.to_dict() for c in changes], **result.to_dict()})
        return
    render.up_summary(result, shop.config.project)
    for change in changes:
        console.out().print(f"[green]scaled[/] {change.service}: {change.before} -> "
                            f"{change.after} (replicas in {shop.config.source.name})")


def register(app: typer.Typer) -> None:
    for command in (up, down, status, health, logs, scale):
        app.command()(command)
