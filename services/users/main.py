"""Entry point of the users service: `python main.py` (cwd = services/users).

Reads the shopkit environment contract, serves the API with waitress (a pure-Python
production WSGI server) on SHOP_HOST:SHOP_PORT and exits with status 0 on SIGTERM or
SIGINT after the in-flight requests finish.
"""

from __future__ import annotations

from app import SERVICE, Settings, create_app
from shopkit.logs import setup_logging
from shopkit.settings import ServiceEnv
from shopkit.signals import exit_on_stop_signals
from waitress import create_server

DEFAULT_PORT = 8001


def main() -> None:
    log = setup_logging(SERVICE)
    senv = ServiceEnv.from_environ(SERVICE, DEFAULT_PORT)
    # waitress' main loop catches the SystemExit and drains its worker threads before
    # returning, which is exactly a graceful shutdown.
    exit_on_stop_signals()
    app = create_app(Settings.from_service_env(senv))
    server = create_server(app, host=senv.host, port=senv.port)
    log.info("listening", extra={"host": senv.host, "port": senv.port})
    try:
        server.run()
    finally:
        server.close()
    log.info("stopped")


if __name__ == "__main__":
    main()
