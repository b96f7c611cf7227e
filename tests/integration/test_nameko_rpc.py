"""shopctl.nameko_rpc against a real Nameko service on the real broker.

The probe service runs in a subprocess (nameko needs eventlet's monkey patching, which
must not leak into the test process). Its name is unique per run, so it shares the
broker's default vhost with anything else safely; its queues are deleted afterwards.
"""

from __future__ import annotations

import concurrent.futures
import os
import subprocess
import sys
import textwrap
import time
import uuid

import kombu
import pytest

from shopctl.nameko_rpc import (
    BrokerUnavailable,
    NamekoRpc,
    RemoteError,
    RpcTimeout,
    UnknownService,
)

pytestmark = pytest.mark.rabbitmq

AMQP_URI = os.environ.get("SHOP_TEST_AMQP_URI", "amqp://guest:guest@127.0.0.1:5672/")

PROBE_SOURCE = textwrap.dedent(
    """
    import warnings
    warnings.filterwarnings("ignore", message=r"\\s*Eventlet is deprecated")
    import eventlet
    eventlet.monkey_patch()
    import os, signal
    from nameko.events import event_handler
    from nameko.rpc import rpc
    from nameko.runners import ServiceRunner

    RECEIVED = []

    class Probe:
        name = os.environ["PROBE_NAME"]

        @rpc
        def echo(self, *args, **kwargs):
            return {"args": list(args), "kwargs": kwargs}

        @rpc
        def fail(self, message):
            raise ValueError(message)

        @rpc
        def sleep(self, seconds):
            eventlet.sleep(seconds)
            return seconds

        @rpc
        def received(self):
            return RECEIVED

        @event_handler(os.environ["PROBE_EVENTS_FROM"], "ping", reliable_delivery=False)
        def on_ping(self, payload):
            RECEIVED.append(payload)

    runner = ServiceRunner({"AMQP_URI": os.environ["PROBE_AMQP_URI"]})
    runner.add_service(Probe)
    signal.signal(signal.SIGTERM, lambda *_: eventlet.spawn_n(runner.stop))
    runner.start()
    runner.wait()
    """
)


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    """(service name, event source name) of a running probe service."""
    name = f"rpc_probe_{uuid.uuid4().hex[:8]}"
    source = f"{name}_src"
    script = tmp_path_factory.mktemp("probe") / "probe.py"
    script.write_text(PROBE_SOURCE)
    env = {**os.environ, "PROBE_NAME": name, "PROBE_EVENTS_FROM": source,
           "PROBE_AMQP_URI": AMQP_URI}
    proc = subprocess.Popen([sys.executable, str(script)], env=env)
    try:
        _wait_until_serving(name, proc)
        yield name, source
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        _delete_queue(f"rpc-{name}")


def _wait_until_serving(name: str, proc: subprocess.Popen, limit: float = 30.0) -> None:
    deadline = time.monotonic() + limit
    with NamekoRpc(AMQP_URI, timeout=5) as rpc:
        while True:
            assert proc.poll() is None, "the probe service exited during start-up"
            try:
                rpc.call(name, "echo")
                return
            except UnknownService:  # its queue is not declared yet
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)


def _delete_queue(queue: str) -> None:
    with kombu.Connection(AMQP_URI) as conn:
        conn.default_channel.queue_delete(queue)


def test_call_returns_the_result_with_args_and_kwargs(probe):
    name, _ = probe
    with NamekoRpc(AMQP_URI, timeout=10) as rpc:
        result = rpc.call(name, "echo", 1, "two", [3], flag=True, nested={"a": None},
                          service="not the target")
    assert result == {"args": [1, "two", [3]],
                      "kwargs": {"flag": True, "nested": {"a": None}, "service": "not the target"}}


def test_remote_exception_arrives_with_its_type_and_message(probe):
    name, _ = probe
    with NamekoRpc(AMQP_URI, timeout=10) as rpc:
        with pytest.raises(RemoteError) as caught:
            rpc.call(name, "fail", "the answer is no")
        # A wrong signature is refused by nameko itself, also as a remote error.
        with pytest.raises(RemoteError) as bad_call:
            rpc.call(name, "fail")
        with pytest.raises(RemoteError) as missing:
            rpc.call(name, "no_such_method")
    assert caught.value.exc_type == "ValueError"
    assert caught.value.message == "the answer is no"
    assert bad_call.value.exc_type == "IncorrectSignature"
    assert missing.value.exc_type == "MethodNotFound"


def test_timeout_then_the_client_keeps_working(probe):
    name, _ = probe
    with NamekoRpc(AMQP_URI, timeout=0.5) as rpc:
        with pytest.raises(RpcTimeout):
            rpc.call(name, "sleep", 1.5)
        # The timed-out call's reply arrives while this call waits; it must be dropped,
        # not taken for this call's result.
        rpc.timeout = 10
        assert rpc.call(name, "sleep", 2.5) == 2.5
        assert rpc.call(name, "echo", "after") == {"args": ["after"], "kwargs": {}}


def test_timeout_is_a_timeout_error():
    # Callers may catch the builtin TimeoutError without knowing this module.
    assert issubclass(RpcTimeout, TimeoutError)


def test_unknown_service_is_reported_without_waiting_for_the_timeout():
    with NamekoRpc(AMQP_URI, timeout=30) as rpc:
        with pytest.raises(UnknownService):
            rpc.call(f"nobody_{uuid.uuid4().hex[:8]}", "anything")


def test_published_event_reaches_a_nameko_event_handler(probe):
    name, source = probe
    payload = {"order_id": 7, "id": uuid.uuid4().hex}
    with NamekoRpc(AMQP_URI, timeout=10) as rpc:
        rpc.publish_event(source, "ping", payload)
        deadline = time.monotonic() + 10
        while payload not in rpc.call(name, "received"):
            assert time.monotonic() < deadline, "the event never reached the handler"
            time.sleep(0.1)


def test_unreachable_broker_is_reported_as_such():
    with pytest.raises(BrokerUnavailable):
        with NamekoRpc("amqp://guest:guest@127.0.0.1:1/", connect_timeout=1):
            pass


def test_one_client_can_be_shared_by_threads(probe):
    name, _ = probe
    with NamekoRpc(AMQP_URI, timeout=10) as rpc:
        with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
            results = list(pool.map(lambda n: rpc.call(name, "echo", n), range(12)))
    assert [r["args"] for r in results] == [[n] for n in range(12)]
