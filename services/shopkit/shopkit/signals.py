"""Stopping a service process on SIGTERM or SIGINT (what both runtimes send) with exit
status 0."""

from __future__ import annotations

import signal


def _exit_zero(signum, frame):
    raise SystemExit(0)


def exit_on_stop_signals() -> None:
    """From now on SIGTERM and SIGINT raise SystemExit(0) in the main thread.

    The server's main loop decides how graceful that is: waitress catches SystemExit and
    drains its worker threads before returning; uvicorn installs its own handlers while
    it serves and re-raises the caught signal to this one once it has shut down.
    Call it from the main thread (Python only runs signal handlers there).
    """
    signal.signal(signal.SIGTERM, _exit_zero)
    signal.signal(signal.SIGINT, _exit_zero)
