"""`shopctl config ...`: check and show the resolved shop.yaml; push, get and set the
per-service settings it declares in Consul KV."""

from __future__ import annotations

from typing import Annotated

import typer

from shopctl.cli.context import app_context

app = typer.Typer(help="Validate and show shop.yaml; its per-service settings in Consul KV.",
                  no_args_is_help=True, rich_markup_mode=None)

JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


@app.command()
def validate(ctx: typer.Context, json: JsonOption = False) -> None:
    """Check shop.yaml and report every problem at once (exit 2 when invalid)."""
    from shopctl import console
    from shopctl.errors import ConfigError

    actx = app_context(ctx)
    try:
        config = actx.config
    except ConfigError as exc:
        if not json:
            raise
        console.print_json({
            "valid": False,
            "file": str(actx.file),
            "problems": [p.to_dict() for p in getattr(exc, "problems", [])],
        })
        raise typer.Exit(exc.exit_code) from None
    summary = {
        "valid": True,
        "file": str(actx.file),
        "project": config.project,
        "services": list(config.services),
        "sagas": list(config.sagas),
    }
    if json:
        console.print_json(summary)
    else:
        console.out().print(
            f"[green]ok[/] {actx.file}: project {config.project!r}, "
            f"{len(config.services)} services, {len(config.sagas)} sagas"
        )


@app.command()
def show(ctx: typer.Context, json: JsonOption = False) -> None:
    """Print the resolved configuration (defaults filled in, variables interpolated)."""
    from shopctl import console

    data = app_context(ctx).config.to_public_dict()
    if json:
        console.print_json(data)
        return
    import yaml

    console.out().print(yaml.safe_dump(data, sort_keys=False), end="", markup=False)


# -- settings in Consul KV (core: shopctl.kvconfig) -------------------------------------


@app.command()
def push(
    ctx: typer.Context,
    services: Annotated[
        list[str] | None, typer.Argument(help="Services to push; default all.")
    ] = None,
    json: JsonOption = False,
) -> None:
    """Write each service's shop.yaml settings (env and config:) to Consul KV, overwriting
    run-time changes of those keys; keys shop.yaml does not declare are left alone."""
    from shopctl import console
    from shopctl.kvconfig import push as push_settings
    from shopctl.kvconfig import registry_for

    config = app_context(ctx).config
    done = push_settings(config, registry_for(config), services)
    if json:
        console.print_json({"project": config.project, "settings": [s.to_dict() for s in done]})
        return
    from rich.markup import escape

    for s in done:
        mark = "[green]set[/]      " if s.changed else "[dim]unchanged[/]"
        console.out().print(f"{mark} {s.service}.{escape(s.key)} = {escape(s.value or '')}")
    changed = sum(s.changed for s in done)
    console.out().print(f"{changed} changed, {len(done) - changed} unchanged "
                        f"(Consul KV shopctl/{config.project}/)")


@app.command()
def get(
    ctx: typer.Context,
    key: Annotated[str, typer.Argument(
        help="SERVICE.KEY (or SERVICE/KEY); SERVICE alone lists its settings.")],
    json: JsonOption = False,
) -> None:
    """Print a setting as Consul KV holds it (exit 1 when it is not set there)."""
    from shopctl import console
    from shopctl.errors import OperationFailed
    from shopctl.kvconfig import get as get_settings
    from shopctl.kvconfig import parse_key, registry_for

    config = app_context(ctx).config
    target = parse_key(key, config, need_key=False)
    single = target.key is not None
    found = get_settings(config, registry_for(config), key)
    if json:
        data = found[0].to_dict() if single else [s.to_dict() for s in found]
        console.print_json(data)
    elif single:
        if found[0].value is not None:
            typer.echo(found[0].value)
    else:
        from rich.markup import escape
        from rich.table import Table

        table = Table(title=f"{target.service} (Consul KV)", title_justify="left")
        for column in ("key", "value", "shop.yaml"):
            table.add_column(column)
        for s in found:
            value = "[dim](not set)[/]" if s.value is None else escape(s.value)
            table.add_row(escape(s.key), value, escape(s.declared) if s.declared else "-")
        console.out().print(table)
    if single and found[0].value is None:
        s = found[0]
        hint = (f"shop.yaml declares {s.declared}; `shopctl config push {s.service}` stores it"
                if s.declared is not None else None)
        raise OperationFailed(f"{s.service}.{s.key} is not set in Consul KV", hint=hint)


@app.command("set")
def set_(
    ctx: typer.Context,
    key: Annotated[str, typer.Argument(help="SERVICE.KEY (or SERVICE/KEY).")],
    value: Annotated[str, typer.Argument(help="The value, stored as given.")],
    json: JsonOption = False,
) -> None:
    """Store a setting in Consul KV. Services that poll their settings (fault
    knobs, say) apply it within seconds; others on their next start."""
    from shopctl import console
    from shopctl.kvconfig import registry_for, set_value

    config = app_context(ctx).config
    s = set_value(config, registry_for(config), key, value)
    if json:
        console.print_json(s.to_dict())
        return
    from rich.markup import escape

    console.out().print(f"[green]set[/] {s.service}.{escape(s.key)} = {escape(value)}"
                        + ("" if s.changed else " [dim](unchanged)[/]"))
    if s.declared is None:
        console.notice(f"{s.service}.{s.key} is not declared in shop.yaml; stored anyway")
