"""`shopctl lab up / down / status / load`: the local multi-node swarm (shopctl.lab)."""

from __future__ import annotations

from typing import Annotated

import typer

app = typer.Typer(
    help="A local Docker Swarm of docker-in-docker nodes to run and test on; images are "
    "loaded onto each node, or pushed to the lab's registry (`lab up --registry`).",
    no_args_is_help=True,
)

NameOption = Annotated[str, typer.Option("--name", help="The lab's name (and node prefix).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


@app.command("up")
def up(
    ctx: typer.Context,
    nodes: Annotated[int, typer.Option("--nodes", "-n", min=1, help="Number of nodes.")] = 3,
    name: NameOption = "shopctl-lab",
    registry: Annotated[bool, typer.Option(
        "--registry", help="Also run the lab's registry (a container on the lab network, "
        "published on 127.0.0.1) for infra.swarm.registry.")] = False,
    registry_port: Annotated[int | None, typer.Option(
        "--registry-port", min=1, max=65535,
        help="The registry's port on 127.0.0.1 (default: the one it has, else 5000).")] = None,
    json: JsonOption = False,
) -> None:
    """Start the lab, or reuse it: node 1 the swarm manager, the others workers. The first
    run builds the node image from Debian packages (about a minute)."""
    from shopctl import console
    from shopctl.cli.context import app_context
    from shopctl.cli.live import LiveView
    from shopctl.lab import lab_up

    with LiveView("lab up", console.err(), verbose=app_context(ctx).verbose) as view:
        lab = lab_up(nodes=nodes, name=name, progress=view,
                     registry=registry or registry_port is not None,
                     registry_port=registry_port)
    if json:
        console.print_json(lab.to_dict())
    else:
        _render(lab)
        console.out().print(f"use it: [bold]export DOCKER_HOST={lab.manager_host}[/]",
                            soft_wrap=True)
        if lab.registry is not None:
            _say_registry(lab)


def _say_registry(lab) -> None:
    from shopctl import console

    reg = lab.registry
    console.out().print(
        f"registry ({reg.state}): in shop.yaml, [bold]infra.swarm.registry: "
        f"{{push: {reg.push}, pull: {reg.pull}}}[/]", soft_wrap=True)


@app.command("status")
def status(name: NameOption = "shopctl-lab", json: JsonOption = False) -> None:
    """One row a node: state, swarm status, role, address. Exits 1 unless every node is
    running and Ready."""
    from shopctl import console
    from shopctl.lab import lab_status

    lab = lab_status(name)
    if json:
        console.print_json(lab.to_dict() if lab else None)
    elif lab is None:
        console.out().print(f"no lab {name!r}: `shopctl lab up` starts one")
    else:
        _render(lab)
        if lab.registry is not None:
            _say_registry(lab)
    if lab is None or not lab.ready:
        raise typer.Exit(1)


@app.command("down")
def down(ctx: typer.Context, name: NameOption = "shopctl-lab") -> None:
    """Remove the lab's nodes, their volumes (images and swarm state) and its network."""
    from shopctl import console
    from shopctl.cli.context import app_context
    from shopctl.cli.live import LiveView
    from shopctl.lab import lab_down

    with LiveView("lab down", console.err(), verbose=app_context(ctx).verbose) as view:
        found = lab_down(name, progress=view)
    console.out().print(f"[green]down[/]: lab {name!r} removed" if found
                        else f"no lab {name!r} to remove")


@app.command("load")
def load(
    ctx: typer.Context,
    images: Annotated[list[str], typer.Argument(help="Host images to copy onto every node.")],
    name: NameOption = "shopctl-lab",
    json: JsonOption = False,
) -> None:
    """Copy images from the host engine onto every node (docker save | docker load), the
    lab's way of shipping images without a registry. Nodes that have an image skip it."""
    from shopctl import console
    from shopctl.cli.context import app_context
    from shopctl.cli.live import LiveView
    from shopctl.errors import LabError
    from shopctl.lab import lab_status, load_images

    lab = lab_status(name)
    if lab is None:
        raise LabError(f"no lab {name!r}", hint="`shopctl lab up` starts one")
    with LiveView("lab load", console.err(), verbose=app_context(ctx).verbose) as view:
        done = load_images(lab, images, progress=view)
    if json:
        console.print_json([vars(item) for item in done])
    else:
        loaded = sum(item.action == "loaded" for item in done)
        console.out().print(f"[green]loaded[/] {loaded}, already there {len(done) - loaded}")


def _render(lab) -> None:
    from rich.table import Table

    from shopctl import console

    table = Table(title=f"lab {lab.name} ({lab.subnet})", title_justify="left")
    for column in ("node", "state", "swarm", "role", "docker_host"):
        table.add_column(column)
    for node in lab.nodes:
        swarm = f"[green]{node.swarm}[/]" if node.swarm == "ready" else f"[red]{node.swarm}[/]"
        state = node.state if node.state == "running" else f"[red]{node.state}[/]"
        table.add_row(node.name, state, swarm, node.role, node.docker_host)
    console.out().print(table)
