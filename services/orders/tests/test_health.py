"""AmqpProbe: the broker half of /health."""

from __future__ import annotations

import socket

import pytest
from orders_health import AmqpProbe


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens once the socket is closed


def test_unreachable_broker_is_unhealthy():
    probe = AmqpProbe(f"amqp://guest:guest@127.0.0.1:{closed_port()}/", timeout=1)
    assert probe.ok() is False


def test_answer_is_cached_for_ttl_seconds(monkeypatch):
    now = [100.0]
    answers = iter([True, False])
    probe = AmqpProbe("amqp://unused/", ttl=2.0, clock=lambda: now[0])
    monkeypatch.setattr(probe, "_connects", lambda: next(answers))

    assert probe.ok() is True
    now[0] += 1.9
    assert probe.ok() is True  # still the cached answer: no second connection
    now[0] += 0.1
    assert probe.ok() is False  # ttl elapsed: checked again


@pytest.mark.rabbitmq
def test_running_broker_is_healthy(amqp_uri):
    assert AmqpProbe(amqp_uri).ok() is True
