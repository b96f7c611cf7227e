"""Entry point of the inventory service: `python main.py` (cwd = services/inventory).

Reads the shopctl environment contract (shopkit.settings.ServiceEnv), serves gRPC on
SHOP_HOST:SHOP_PORT (default 50051) and metrics on SHOP_METRICS_PORT (default 9103),
and exits 0 after a graceful stop on SIGTERM or SIGINT. Consul is optional: its KV may
override `grpc_workers` and `stop_grace_seconds`. The service key (SHOP_SECRETS_DIR's
service_key, or SHOP_SERVICE_KEY) checks the credentials of ReserveStock and
ReleaseStock (server.py); without one the service exits 2.
"""

from __future__ import annotations

import signal
import sys
import threading

from shopkit.logs import setup_logging
from shopkit.settings import ServiceEnv, load_settings, service_key

import server

DEFAULT_PORT = 50051
DEFAULT_METRICS_PORT = 9103
DEFAULTS = {"grpc_workers": "16", "stop_grace_seconds": "5"}


def main() -> int:
    senv = ServiceEnv.from_environ("inventory", DEFAULT_PORT)
    log = setup_logging(senv.service)
    settings = load_settings(senv, DEFAULTS)
    try:
        key = service_key(senv)
    except RuntimeError as exc:
        log.error("invalid configuration", extra={"error": str(exc)})
        return 2

    stop_requested = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop_requested.set())

    try:
        running = server.start(
            senv.data_dir,
            host=senv.host,
            port=senv.port,
            metrics_port=(DEFAULT_METRICS_PORT if senv.metrics_port is None else senv.metrics_port),
            service=senv.service,
            max_workers=int(settings["grpc_workers"]),
            service_key=key,
        )
    except Exception:
        log.exception("cannot start", extra={"port": senv.port, "data_dir": str(senv.data_dir)})
        return 1
    log.info(
        "serving",
        extra={
            "address": f"{senv.host}:{running.port}",
            "metrics_port": running.metrics_port,
            "data_dir": str(senv.data_dir),
        },
    )
    stop_requested.wait()
    log.info("stopping")
    running.stop(grace=float(settings["stop_grace_seconds"]))
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
