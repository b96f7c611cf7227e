"""shopkit.amqp.wait_for_broker: a Nameko service started before its broker waits for it
at a short interval, gives up after its timeout, and still stops on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time

from shopkit.amqp import wait_for_broker


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens once the socket is closed


def test_an_absent_broker_is_waited_for_until_the_timeout_then_the_service_starts_anyway():
    started = time.monotonic()
    assert wait_for_broker(f"amqp://guest:guest@127.0.0.1:{closed_port()}/", timeout=0.6,
                           interval=0.05) is True
    assert 0.6 <= time.monotonic() - started < 5


def test_sigterm_while_waiting_ends_the_wait_and_restores_the_handlers():
    before = signal.getsignal(signal.SIGTERM)
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    started = time.monotonic()
    try:
        assert wait_for_broker(f"amqp://guest:guest@127.0.0.1:{closed_port()}/", timeout=30,
                               interval=0.05) is False
    finally:
        timer.cancel()
    assert time.monotonic() - started < 5
    assert signal.getsignal(signal.SIGTERM) is before
