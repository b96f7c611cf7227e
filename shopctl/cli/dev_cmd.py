"""`shopctl dev`: `up`, then serve every saved change until Ctrl+C (see shopctl.dev)."""

from __future__ import annotations

from typing import Annotated

import typer

from shopctl.cli.runtime_cmd import JsonOption, RuntimeOption


def dev(
    ctx: typer.Context,
    services: Annotated[
        list[str] | None,
        typer.Argument(help="Services to watch (brought up with their dependencies); "
                            "default all."),
    ] = None,
    runtime: RuntimeOption = "auto",
    logs: Annotated[bool, typer.Option("--logs/--no-logs",
                                       help="Follow the watched services' logs.")] = True,
    json: JsonOption = False,
) -> None:
    """Bring the shop up, then watch the services' code: a saved change is copied into
    the running service and its process restarted (no build); a requirements or proto
    change rebuilds it. One line per reload; Ctrl+C stops watching and leaves the shop
    running."""
    import signal
    import threading

    from shopctl import console
    from shopctl.cli import runtime_cmd
    from shopctl.cli.context import app_context
    from shopctl.dev import DevLoop, Reload
    from shopctl.orchestrate import with_dependencies

    config = app_context(ctx).config
    watched = with_dependencies(config, services) if services else list(config.services)
    watched = [name for name in watched if not services or name in services]
    if not watched:
        from shopctl.errors import UsageError

        raise UsageError(f"{config.source.name} has no services to watch",
                         hint="add one with `shopctl scaffold new-service NAME --kind "
                              "flask|fastapi|nameko|grpc`")
    runtime_cmd.up(ctx, services, runtime=runtime, dry_run=False, json=json)
    shop = runtime_cmd._shop(ctx, runtime)
    stop = threading.Event()
    print_lock = threading.Lock()

    def said(result: Reload) -> None:
        with print_lock:
            if json:
                console.print_json_line({"event": "reload", **result.to_dict()})
                return
            _say_reload(result)

    def follow() -> None:
        from shopctl.cli import render

        seen: dict[str, float] = {}  # per service, the time of the last line shown

        def fresh(lines):
            for line in lines:
                if line.timestamp is not None:
                    if line.timestamp <= seen.get(line.service, 0.0):
                        continue  # shown before the stream was followed again
                    seen[line.service] = line.timestamp
                yield line

        tail = 0
        while not stop.is_set():  # a restarted container ends its log stream: follow again
            try:
                render.log_lines(fresh(shop.logs(watched, follow=True, tail=tail)), watched,
                                 json)
            except Exception:  # noqa: BLE001 - logs are a courtesy; the reload lines are not
                pass
            tail = 200  # what came while the stream was down, less what was shown
            stop.wait(0.2)

    def ready() -> None:
        if json:
            console.print_json_line({"event": "watching", "services": watched})
        else:
            console.err().print(f"watching {', '.join(watched)}: save a file to reload it; "
                                "Ctrl+C stops watching", markup=False, highlight=False)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    if logs:
        threading.Thread(target=follow, name="shopctl-dev-logs", daemon=True).start()
    DevLoop(shop, watched, said).run(stop, ready)
    if json:
        console.print_json_line({"event": "stopped"})
    console.err().print("stopped watching; the shop keeps running (`shopctl down` stops it; "
                        "`shopctl up` rebuilds what dev reloaded in place)",
                        markup=False, highlight=False)


def _say_reload(result) -> None:
    from rich.markup import escape

    from shopctl import console

    files = ", ".join(result.files[:4]) + (f" and {len(result.files) - 4} more"
                                           if len(result.files) > 4 else "")
    out = console.out()
    if result.ok:
        out.print(f"[green]reloaded[/] {escape(result.service)}: {escape(files)} "
                  f"({result.how} in {result.seconds:.1f}s)")
        return
    out.print(f"[red]reload failed[/] {escape(result.service)}: {escape(files)}: "
              f"{escape(result.error or 'failed')} after {result.seconds:.1f}s; the next "
              "good save recovers it")
    for line in result.log_tail:
        out.print(f"  [dim]{escape(line)}[/]")


def register(app: typer.Typer) -> None:
    app.command()(dev)
