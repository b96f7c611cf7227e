"""Everything a user sees goes through here: one stdout console, one stderr console.

rich is imported on first use, not at start-up, so `shopctl --help` stays quick.
rich honours NO_COLOR (and FORCE_COLOR) by itself; we also drop colour when stdout is
not a terminal, which rich does too.
"""

from __future__ import annotations

import json
import sys
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console


def _console(stderr: bool) -> Console:
    import os

    from rich.console import Console

    # NO_COLOR (no-color.org) asks for no colour; rich would still send bold and dim,
    # which break the same scripts and screen readers, so we send no styling at all.
    plain = bool(os.environ.get("NO_COLOR"))
    return Console(stderr=stderr, highlight=False, color_system=None if plain else "auto")


@cache
def out() -> Console:
    return _console(stderr=False)


@cache
def err() -> Console:
    return _console(stderr=True)


def print_json(data: Any) -> None:
    """Machine-readable output: plain JSON on stdout, never styled or wrapped."""
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    sys.stdout.flush()


def print_json_line(data: Any) -> None:
    """One JSON document on one line: for commands that stream records (a worker)."""
    sys.stdout.write(json.dumps(data, separators=(",", ":"), default=str) + "\n")
    sys.stdout.flush()


def error(message: str, hint: str | None = None) -> None:
    from rich.markup import escape

    console = err()
    lines = message.splitlines() or [""]
    console.print(f"[bold red]error:[/] {escape(lines[0])}", soft_wrap=True)
    for line in lines[1:]:
        console.print(escape(line), soft_wrap=True)
    if hint:
        console.print(f"[yellow]hint:[/] {escape(hint)}", soft_wrap=True)


def notice(message: str) -> None:
    from rich.markup import escape

    err().print(f"[cyan]note:[/] {escape(message)}")
