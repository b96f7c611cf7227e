"""The root command: global options and the command groups.

Each group lives in its own module and imports its implementation inside the command
functions, so building this tree (and `shopctl --help`) stays cheap.
"""

from __future__ import annotations

from typing import Annotated

import typer

from shopctl import __version__
from shopctl.cli import (
    config_cmd,
    dev_cmd,
    init_cmd,
    lab_cmd,
    metrics_cmd,
    runtime_cmd,
    saga_cmd,
    scaffold_cmd,
    token_cmd,
)
from shopctl.cli.context import AppContext, resolve_file

EPILOG = (
    "Exit codes: 0 success; 1 the operation failed; 2 usage or configuration error; "
    "3 a saga is stuck and needs an operator."
)

app = typer.Typer(
    name="shopctl",
    help="Build, run, register and inspect a Python microservices shop described by shop.yaml.",
    epilog=EPILOG,
    no_args_is_help=True,
    add_completion=False,
    # Plain click help: typer's rich help imports ~100 ms of rich/markdown on every --help.
    rich_markup_mode=None,
    pretty_exceptions_show_locals=False,  # locals can hold secrets
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"shopctl {__version__}")
        raise typer.Exit(0)


@app.callback()
def root(
    ctx: typer.Context,
    file: Annotated[
        str | None,
        typer.Option(
            "-f", "--file", help="Path to shop.yaml [default: ./shop.yaml or $SHOPCTL_FILE]."
        ),
    ] = None,
    verbose: Annotated[
        bool,
        typer.Option("--verbose", "-v", help="Say more about what happens."),
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    ctx.obj = AppContext(file=resolve_file(file), verbose=verbose)


app.command("init")(init_cmd.init)
runtime_cmd.register(app)
metrics_cmd.register(app)
token_cmd.register(app)
dev_cmd.register(app)
app.add_typer(config_cmd.app, name="config")
app.add_typer(saga_cmd.app, name="saga")
app.add_typer(scaffold_cmd.app, name="scaffold")
app.add_typer(lab_cmd.app, name="lab")
