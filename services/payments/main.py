"""Entry point: `python main.py` (cwd services/payments), configured by the shopkit
environment contract; serves until SIGTERM or SIGINT, then exits 0."""

from __future__ import annotations

import signal
import sys

import uvicorn
from app import create_app
from config import ConfigError
from shopkit.logs import setup_logging
from shopkit.settings import ServiceEnv

DEFAULT_PORT = 8004


def main() -> int:
    senv = ServiceEnv.from_environ("payments", DEFAULT_PORT)
    log = setup_logging(senv.service)
    try:
        app = create_app(senv)
    except ConfigError as exc:
        log.error("invalid configuration", extra={"error": str(exc)})
        return 2
    # log_config=None: uvicorn's own records go through the JSON handler set up above.
    server = uvicorn.Server(uvicorn.Config(app, host=senv.host, port=senv.port,
                                           log_config=None, access_log=False))

    # uvicorn handles SIGTERM/SIGINT while it runs, then re-raises the signal to the
    # handler that was installed before it, which would kill the process with the
    # signal's status. This handler makes that re-raise harmless, and also covers a
    # signal that arrives before uvicorn has installed its own.
    def stop(signum: int, _frame) -> None:
        server.should_exit = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)
    log.info("starting", extra={"host": senv.host, "port": senv.port})
    server.run()
    if not server.started:
        log.error("server did not start")
        return 1
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
