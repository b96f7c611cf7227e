"""Publishing the saga log's outbox: outcome events reach the broker at least once.

The engine writes each outcome event (NAME.completed, NAME.compensated, NAME.stuck) into
the log in the same transaction as the status it announces, so the two cannot part: a
crash or a broker outage can delay an event, never lose it or announce an outcome the
log does not hold. An `OutboxPublisher` thread sends the events and marks them sent;
events a failed or crashed publisher left are sent by the next one (any `saga run`,
`resume` or `retry` of the project). At-least-once: after a crash between the send
and the mark, an event goes out twice with the same `event_id`, which consumers use
to drop the repeat.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from shopctl.saga.store import SagaStore

logger = logging.getLogger(__name__)

Send = Callable[[str, dict[str, Any]], None]


class OutboxPublisher:
    """Sends `log`'s unpublished events with `send(event_type, message)` on a thread.

    `notify()` wakes it (the engine calls it after committing an event); without a
    wake-up it still looks every `poll` seconds, for events other processes left and
    for retries. A failed send is retried after a backoff that doubles up to
    `max_backoff`. `flush(timeout)` waits until nothing is left to send, or a send has
    failed since the flush began, or the timeout; it returns how many events wait.
    """

    def __init__(self, log: SagaStore, send: Send, *, poll: float = 1.0, lease: float = 30.0,
                 backoff: float = 0.5, max_backoff: float = 60.0, batch: int = 100):
        self.log = log
        self.send = send
        self.poll = poll
        self.lease = lease
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.batch = batch
        self.last_error: str | None = None
        self.sent = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._cond = threading.Condition()
        # For flush(): passes begun, the last one that sent all that was due when it
        # began, failed sends.
        self._passes = 0
        self._drained_pass = 0
        self._failures = 0
        self._thread = threading.Thread(target=self._loop, name="saga-outbox", daemon=True)

    def start(self) -> OutboxPublisher:
        self._thread.start()
        return self

    def notify(self) -> None:
        self._wake.set()

    def flush(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        with self._cond:
            began, failures = self._passes, self._failures
            self._wake.set()
            # Done when a pass that began after now has sent all that was due (every
            # event committed before the flush among it), or a send failed.
            self._cond.wait_for(lambda: self._drained_pass > began or self._failures != failures
                                or not self._thread.is_alive(),
                                max(0.0, deadline - time.monotonic()))
        return self.log.unpublished()

    def close(self, timeout: float = 5.0) -> int:
        """Flush for up to `timeout` seconds, stop the thread; returns the events left
        (they stay in the log for the next publisher)."""
        left = self.flush(timeout)
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=max(1.0, timeout))
        return left

    # -- the thread ------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            with self._cond:
                self._passes += 1
                this = self._passes
            claimed = 0
            try:
                claimed = self._publish_due()
            except Exception as exc:  # the log itself failed; look again later
                logger.warning("saga outbox: %s", exc)
                with self._cond:
                    self._failures += 1
            with self._cond:
                if claimed < self.batch:
                    self._drained_pass = this
                self._cond.notify_all()
            if claimed < self.batch:
                self._wake.wait(self.poll)
                self._wake.clear()

    def _publish_due(self) -> int:
        """One pass: send the due events; returns how many it took."""
        events = self.log.fresh_events(self.batch)
        if len(events) < self.batch:
            events += self.log.claim_events(self.batch - len(events), self.lease)
        sent: list[int] = []
        try:
            for i, event in enumerate(events):
                try:
                    self.send(event.event_type, event.message())
                except Exception as exc:
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    # The broker is likely gone: the rest of the batch waits as well.
                    unsent = [e.id for e in events[i:]]
                    retry_in = min(self.max_backoff, self.backoff * 2 ** event.attempts)
                    self.log.event_failed(unsent, self.last_error, retry_in)
                    with self._cond:
                        self._failures += 1
                    logger.warning("saga outbox: could not publish %d event(s), retrying "
                                   "in %.1fs: %s", len(unsent), retry_in, self.last_error)
                    return len(events)
                sent.append(event.id)
        finally:
            if sent:
                self.log.events_published(sent)
                self.sent += len(sent)
        return len(events)
