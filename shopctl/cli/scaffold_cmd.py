"""`shopctl scaffold ...`: new services from templates."""

from __future__ import annotations

from typing import Annotated

import typer

from shopctl.cli.context import app_context

app = typer.Typer(
    help="Create new services from templates.", no_args_is_help=True, rich_markup_mode=None
)

JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


@app.command("new-service")
def new_service(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The service name (a DNS label, e.g. reviews).")],
    kind: Annotated[
        str, typer.Option("--kind", "-k", help="Template kind (see `scaffold kinds`).")
    ],
    port: Annotated[
        int | None,
        typer.Option("--port", "-p", min=1, max=65535, help="Port [default: a free one]."),
    ] = None,
    depends_on: Annotated[
        list[str] | None,
        typer.Option("--depends-on", "-d", help="A service this one needs (repeatable)."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show the files and the shop.yaml change only.")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Overwrite an existing service and its files.")
    ] = False,
    json: JsonOption = False,
) -> None:
    """Render templates/KIND into services/NAME and add the service to shop.yaml."""
    from shopctl import console
    from shopctl.scaffold import scaffold_service

    actx = app_context(ctx)
    result = scaffold_service(
        actx.config, name, kind, port, depends_on or [], dry_run=dry_run, force=force
    )
    if json:
        console.print_json(result.to_dict())
        return
    out = console.out()
    verb = "would write" if dry_run else "wrote"
    out.print(f"{verb} {len(result.files)} files:", markup=False)
    for file in result.files:
        out.print(f"  {file.path}", markup=False)
    if dry_run:
        out.print(f"{actx.file.name} change:", markup=False)
        out.print(result.yaml_diff, end="", markup=False, soft_wrap=True)
        return
    entry = result.entry
    out.print(f"added service {entry.name!r} ({entry.kind}, port {entry.port}) to "
              f"{actx.file.name}", markup=False)
    if result.notes:
        out.print(result.notes, markup=False, soft_wrap=True)


@app.command()
def kinds(ctx: typer.Context, json: JsonOption = False) -> None:
    """List the kinds: shopctl's own, and the project's templates/KIND/ over them."""
    from shopctl import console
    from shopctl.scaffold.kinds import project_kinds

    root = app_context(ctx).file.resolve().parent
    found = project_kinds(root)
    if json:
        console.print_json([kind.to_dict() for kind in found.values()])
        return
    out = console.out()
    if not found:
        out.print("no kinds: shopctl's templates are missing and the project has none",
                  markup=False)
        return
    width = max(len(name) for name in found)
    for kind in found.values():
        where = "shopctl" if kind.source == "shopctl" else f"project {kind.path}"
        out.print(f"{kind.name:<{width}}  from {where}: {kind.description}", markup=False,
                  soft_wrap=True)
