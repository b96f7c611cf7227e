"""`shopctl config ...`: check and show the resolved shop.yaml."""

from __future__ import annotations

from typing import Annotated

import typer

from shopctl.cli.context import app_context

app = typer.Typer(help="Validate and show shop.yaml.", no_args_is_help=True, rich_markup_mode=None)

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
