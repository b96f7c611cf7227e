"""`shopctl init`: a new project from nothing (or the demo shop), with next steps."""

from __future__ import annotations

from typing import Annotated

import typer


def init(
    directory: Annotated[str, typer.Argument(metavar="[DIR]", help="Where (default: here).")
                         ] = ".",
    name: Annotated[str | None, typer.Option(
        "--name", help="The project's name (default: made from the folder's name).")] = None,
    demo: Annotated[bool, typer.Option(
        "--demo", help="The demo shop shopctl ships: its services, protos and sagas.")
                    ] = False,
    force: Annotated[bool, typer.Option(
        "--force", help="Write into a folder that already holds a shop.yaml, replacing "
                        "the files init writes (no other file is touched).")] = False,
    json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Create a project: shop.yaml, .gitignore, services/ and protos/ (or the demo)."""
    from pathlib import Path

    from shopctl import console, project_init
    from shopctl.scaffold.writer import write_files

    root = Path(directory)
    project_init.refuse_existing(root, force)
    project = project_init.project_name(root, name)
    files = project_init.plan_init(root, project, demo)
    root.mkdir(parents=True, exist_ok=True)
    write_files(root, files, force=True)  # refuse_existing decided; only our files change
    steps = project_init.next_steps(root, files, demo)
    if json:
        console.print_json({"project": project, "root": str(root.resolve()), "demo": demo,
                            "files": [str(f.path) for f in files], "next": steps})
        return
    out = console.out()
    what = "the demo shop" if demo else "an empty project"
    out.print(f"created {what} {project!r} in {root.resolve()} ({len(files)} files)",
              markup=False)
    out.print("next:", markup=False)
    for step in steps:
        out.print(f"  {step}", markup=False, soft_wrap=True)
