"""nameko services stop within a turn of STOP_POLL, not kombu's 1 s turns (the consume
loop, driven with a stand-in connection: pure logic)."""

from __future__ import annotations

import socket
from contextlib import contextmanager

from nameko.messaging import QueueConsumer

from shopkit import nameko_kit


class _Connection:
    def __init__(self, consumer, stop_after: int):
        self.consumer, self.stop_after, self.waits = consumer, stop_after, []

    def drain_events(self, timeout):
        self.waits.append(timeout)
        if len(self.waits) == self.stop_after:
            self.consumer.should_stop = True  # as on_iteration does once none is left
        raise socket.timeout()

    def heartbeat_check(self):
        pass


class _Consumer(QueueConsumer):
    """nameko's QueueConsumer with the broker replaced: only its consume loop runs."""

    def __init__(self):
        self.should_stop = False
        self.connection_ = _Connection(self, stop_after=3)

    @contextmanager
    def consumer_context(self, **kwargs):
        yield self.connection_, None, []

    def on_iteration(self):
        pass


def test_a_queue_consumer_waits_for_the_broker_in_short_turns_and_stops_on_the_next():
    consumer = _Consumer()
    turns = list(consumer.consume())
    assert turns == []  # idle: nothing was consumed
    # every wait was one short turn, and the loop ended on the turn after the stop flag
    assert consumer.connection_.waits == [nameko_kit.STOP_POLL] * 3
    assert nameko_kit.STOP_POLL < 1  # kombu's own turn is 1 s


def test_an_explicit_interval_still_wins():
    consumer = _Consumer()
    list(consumer.consume(safety_interval=0.5))
    assert consumer.connection_.waits == [0.5] * 3
