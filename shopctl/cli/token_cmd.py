"""`shopctl token SERVICE --scope S`: a service credential for calling a service by hand
(core: shopctl.service_auth)."""

from __future__ import annotations

from typing import Annotated

import typer

from shopctl.cli.context import app_context


def token(
    ctx: typer.Context,
    service: Annotated[str, typer.Argument(help="The service to call (as in shop.yaml).")],
    scope: Annotated[
        list[str],
        typer.Option("--scope", "-s", help="What the call may do: the name of the action "
                     "(as the service names it) or admin; repeat for several."),
    ],
    ttl: Annotated[int, typer.Option("--ttl", help="Seconds it is valid (at most 3600).")] = 60,
    header: Annotated[
        bool, typer.Option("--header", help="Print it as an HTTP header line.")
    ] = False,
) -> None:
    """Print a service credential signed with the project's service key.

    HTTP: header X-Shop-Service-Token; gRPC: metadata x-shop-service-token; nameko:
    context data x-shop-service-token. Example:
    curl -H "$(shopctl token SERVICE -s admin --header)" http://127.0.0.1:PORT/admin/..."""
    from shopctl.service_auth import HEADER, token_for

    value = token_for(app_context(ctx).config, service, scope, ttl)
    typer.echo(f"{HEADER}: {value}" if header else value)


def register(app: typer.Typer) -> None:
    app.command()(token)
