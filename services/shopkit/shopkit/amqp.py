"""Waiting for the AMQP broker at start-up.

A service is often started together with its broker (shopctl starts a Nameko service
while RabbitMQ is still booting). Nameko's consumer retries a refused connection after
2, 4, 6... seconds, so a service that tried a moment before the broker answered would
sit idle for seconds; waiting here, with short retries, connects as soon as the broker
accepts a login.
"""

from __future__ import annotations

import logging
import signal
import time

log = logging.getLogger(__name__)


def wait_for_broker(
    amqp_uri: str,
    timeout: float = 60.0,
    interval: float = 0.1,
    logger: logging.Logger | None = None,
) -> bool:
    """Block until `amqp_uri` accepts a connection, or `timeout` seconds pass (the
    caller then starts anyway and its own, slower, retries take over): True.

    SIGTERM or SIGINT meanwhile ends the wait (a container's PID 1 ignores them unless
    it handles them): False, and the caller should exit. The signal handlers in place
    before the call are restored.
    """
    import kombu  # imported here: only AMQP services depend on it

    out = logger or log
    asked_to_stop: list[int] = []
    previous = {
        signum: signal.signal(signum, lambda signum, frame: asked_to_stop.append(signum))
        for signum in (signal.SIGTERM, signal.SIGINT)
    }
    deadline = time.monotonic() + timeout
    waiting = False
    try:
        while not asked_to_stop:
            try:
                with kombu.Connection(amqp_uri, connect_timeout=2.0) as conn:
                    # One attempt; this loop does the retrying, at a short interval.
                    conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0,
                                           timeout=2.0)
                if waiting:
                    out.info("broker reachable")
                return True
            except Exception as exc:  # any failure means "not yet"
                if time.monotonic() >= deadline:
                    out.warning("broker still unreachable, starting anyway",
                                extra={"error": str(exc), "waited_s": timeout})
                    return True
                if not waiting:
                    out.info("waiting for the broker", extra={"error": str(exc)})
                    waiting = True
            time.sleep(interval)
        out.info("stopped while waiting for the broker")
        return False
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
