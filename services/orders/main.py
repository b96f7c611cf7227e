"""Run the orders service: `python main.py` (cwd services/orders).

Reads the shopkit environment contract (SHOP_HOST, SHOP_PORT default 8003,
SHOP_DATA_DIR, SHOP_AMQP_URI, the service key ...), serves RPC/events on the broker and /health and
/metrics on SHOP_HOST:SHOP_PORT, logs JSON lines to stdout, and exits 0 after a clean
stop on SIGTERM or SIGINT (a second signal kills the workers still running).
"""

import warnings

# Eventlet warns on import that it is deprecated. The warning is aimed at new projects
# choosing a framework, not at operators, so it is filtered by its exact text (any
# other warning still shows) before the first import of eventlet.
warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")

import eventlet  # noqa: E402

# Before anything else imports socket, threading or time.
eventlet.monkey_patch()

import logging  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402

from nameko.runners import ServiceRunner  # noqa: E402
from providers import DB_PATH_CONFIG_KEY, SERVICE_LABEL_CONFIG_KEY  # noqa: E402
from service import OrdersService, serving  # noqa: E402
from shopkit.amqp import wait_for_broker  # noqa: E402
from shopkit.logs import setup_logging  # noqa: E402
from shopkit.settings import NO_SERVICE_KEY, ServiceEnv  # noqa: E402

DEFAULT_PORT = 8003


def nameko_config(senv: ServiceEnv) -> dict:
    return {
        "AMQP_URI": senv.amqp_uri,
        "WEB_SERVER_ADDRESS": f"{senv.host}:{senv.port}",
        DB_PATH_CONFIG_KEY: str(senv.data_dir / "orders.db"),
        SERVICE_LABEL_CONFIG_KEY: senv.service,
    }


def run(senv: ServiceEnv, log: logging.Logger) -> int:
    # The broker may still be booting (shopctl starts both at once); nameko itself
    # retries a refused connection only after 2, 4, 6... s.
    if not wait_for_broker(senv.amqp_uri, logger=log):
        return 0  # asked to stop while waiting
    runner = ServiceRunner(nameko_config(senv))
    runner.add_service(OrdersService)
    signals_seen = 0

    def shutdown(signame: str) -> None:
        nonlocal signals_seen
        signals_seen += 1
        log.info("stopping", extra={"signal": signame})
        serving.clear()
        if signals_seen == 1:
            runner.stop()
        else:
            runner.kill()

    def on_signal(signum, frame):
        # A signal handler interrupts whichever green thread runs; it must not block
        # or take locks (logging does), so the work happens in a fresh green thread.
        eventlet.spawn_n(shutdown, signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    runner.start()
    serving.set()
    log.info("started", extra={"address": f"{senv.host}:{senv.port}"})
    # wait() returns once every container has stopped, and raises if one died.
    eventlet.spawn(runner.wait).wait()
    log.info("stopped")
    return 0


def main() -> int:
    senv = ServiceEnv.from_environ("orders", DEFAULT_PORT)
    log = setup_logging(senv.service)
    if not senv.service_key:  # every RPC checks credentials with it (service.py)
        log.error("invalid configuration", extra={"error": NO_SERVICE_KEY})
        return 2
    try:
        return run(senv, log)
    except Exception:
        log.exception("orders service failed")
        return 1


if __name__ == "__main__":
    sys.exit(main())
