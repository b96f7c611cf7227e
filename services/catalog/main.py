"""Entry point of the catalog service: `python main.py` (cwd = services/catalog).

Reads the shopkit environment contract and serves the API with uvicorn on
SHOP_HOST:SHOP_PORT; SIGTERM or SIGINT stops it gracefully with exit status 0.
"""

from __future__ import annotations

import uvicorn
from app import SERVICE, create_app
from shopkit.logs import setup_logging
from shopkit.settings import ServiceEnv, jwt_secret
from shopkit.signals import exit_on_stop_signals

DEFAULT_PORT = 8002


def main() -> None:
    log = setup_logging(SERVICE)
    senv = ServiceEnv.from_environ(SERVICE, DEFAULT_PORT)
    # uvicorn swaps in its own handlers while serving, then re-raises the signal it
    # caught once shut down; with the default handler that would end the process
    # with -SIGTERM instead of 0.
    exit_on_stop_signals()
    app = create_app(senv.data_dir, jwt_secret(senv))
    # log_config=None: keep shopkit's JSON handler instead of uvicorn's text format.
    config = uvicorn.Config(
        app, host=senv.host, port=senv.port, log_config=None, server_header=False
    )
    try:
        uvicorn.Server(config).run()
    finally:
        log.info("stopped")


if __name__ == "__main__":
    main()
