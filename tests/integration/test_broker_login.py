"""shopctl.broker.logs_in speaks the AMQP 0-9-1 handshake itself (no AMQP library on
`up`'s path): against a real RabbitMQ it says what a client library's login says."""

from __future__ import annotations

import socket

import kombu
import pytest

from shopctl.broker import answers, logs_in

pytestmark = pytest.mark.rabbitmq

BROKER = ("127.0.0.1", 5672)  # the machine's RabbitMQ, whose guest may log in from here


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def library_login(uri: str) -> bool:
    try:
        with kombu.Connection(uri, connect_timeout=2) as connection:
            connection.ensure_connection(max_retries=1, interval_start=0, interval_step=0,
                                         timeout=2)
            return bool(connection.connected)
    except Exception:  # noqa: BLE001 - refused, in any way
        return False


@pytest.fixture(scope="module", autouse=True)
def broker() -> None:
    if not answers(*BROKER):
        pytest.skip("no RabbitMQ on 127.0.0.1:5672 (.ci/run starts one)")
    if not library_login("amqp://guest:guest@127.0.0.1:5672/"):
        pytest.skip("the machine's RabbitMQ does not let guest in from here")


@pytest.mark.parametrize(("uri", "expected"), [
    ("amqp://guest:guest@127.0.0.1:5672/", True),
    ("amqp://guest:guest@127.0.0.1:5672/%2F", True),
    ("amqp://guest:wrong@127.0.0.1:5672/", False),
    ("amqp://shopctl-nobody:x@127.0.0.1:5672/", False),
    ("amqp://guest:guest@127.0.0.1:5672/shopctl-no-such-vhost", False),
])
def test_a_login_is_what_a_client_library_says(uri, expected):
    assert logs_in(uri) is expected
    assert library_login(uri) is expected


def test_nothing_listening_is_no_login():
    assert logs_in(f"amqp://guest:guest@127.0.0.1:{closed_port()}/") is False
