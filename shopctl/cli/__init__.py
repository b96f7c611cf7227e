"""The command line. Commands parse arguments and print; the work lives in the core
modules, which know nothing of the terminal.

`main()` is the console-script entry point and the one place where a ShopctlError is
turned into a message on stderr and an exit code. Usage errors are click's (exit 2).
Anything else that escapes is a bug and keeps its traceback, with one exception: an
OSError refusing a path inside a project's `.shopctl/` (no permission, a read-only file
system, a full disk) that some module met outside shopctl.state's own checks is the same
clear error those checks give (shopctl.state.refused), exit 1.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    from shopctl.cli.app import app
    from shopctl.errors import ShopctlError

    try:
        app(args=argv, prog_name="shopctl")  # standalone: click prints usage errors, exits 2
    except ShopctlError as exc:
        _fail(exc)
    except OSError as exc:
        from shopctl.state import refused

        error = refused(exc, anywhere=False)
        if error is None:
            raise
        _fail(error)


def _fail(exc) -> None:
    from shopctl import console

    console.error(exc.message, exc.hint)
    sys.exit(exc.exit_code)
