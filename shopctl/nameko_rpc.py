"""Call Nameko services and publish Nameko events from ordinary (non-eventlet) code.

Nameko's own standalone proxies import eventlet; shopctl's CLI and saga engine run plain
threads, so this module speaks the wire protocol with kombu alone:

RPC request
    published to the topic exchange "nameko-rpc" (durable) with routing key
    "<service>.<method>", JSON body {"args": [...], "kwargs": {...}}, and the properties
    reply_to=<routing key of our reply queue> and correlation_id=<uuid>.
RPC reply
    the service publishes {"result": ..., "error": null | {exc_type, exc_path, exc_args,
    value}} to "nameko-rpc" with routing key = our reply_to, same correlation_id.
Event
    published to the topic exchange "<source service>.events" (durable) with routing
    key = event type and the JSON payload as body; handlers declared with
    @event_handler("<source service>", "<event type>") receive it.

With `credentials` (shopctl.service_auth.Credentials), every request carries a fresh
service credential for the called service in its context data (the AMQP header
"nameko.x-shop-service-token"), its scope the method's name unless the call names one:
services check it on the methods they protect (shopkit.nameko_kit.service_rpc).

Requests carry a per-message TTL equal to the call timeout: a request that no service
picks up before the caller gives up is dropped by the broker rather than executed later.

Threads: one NamekoRpc may be shared; a lock serialises its calls (a call holds the
connection until its reply arrives). For calls in parallel, use one client per thread.
A broken connection raises BrokerUnavailable and is re-opened by the next call; a call
is never retried here, since only the caller knows whether the method is idempotent.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import TYPE_CHECKING, Any

from kombu import Connection, Consumer, Exchange, Producer, Queue

if TYPE_CHECKING:
    from shopctl.service_auth import Credentials

RPC_EXCHANGE = "nameko-rpc"
PERSISTENT = 2  # AMQP delivery mode, as nameko publishes


class NamekoRpcError(Exception):
    """Base of everything this module raises."""


class RemoteError(NamekoRpcError):
    """The remote method raised. `exc_type` is the remote class name (e.g. SlotTaken),
    `message` its text."""

    def __init__(self, exc_type: str, message: str, exc_path: str | None = None,
                 exc_args: list | None = None):
        super().__init__(f"{exc_type}: {message}")
        self.exc_type = exc_type
        self.message = message
        self.exc_path = exc_path
        self.exc_args = exc_args or []


class RpcTimeout(NamekoRpcError, TimeoutError):
    """No reply within the client's timeout. The method may still run (or have run)."""


class UnknownService(NamekoRpcError):
    """The broker has no queue for this service: it has never run on this vhost."""


class BrokerUnavailable(NamekoRpcError):
    """The broker could not be reached or the connection broke."""


class NamekoRpc:
    """A synchronous Nameko RPC client and event publisher over one AMQP connection.

        with NamekoRpc("amqp://guest:guest@127.0.0.1:5672/", timeout=10) as rpc:
            slot = rpc.call("shipping", "book_slot", "2024-06-01")
            rpc.publish_event("shipping", "slot_booked", {"slot_id": 7})
    """

    def __init__(self, amqp_uri: str, timeout: float = 30.0, *, connect_timeout: float = 5.0,
                 client_name: str = "shopctl", credentials: Credentials | None = None):
        self.amqp_uri = amqp_uri
        self.credentials = credentials
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.client_name = client_name
        self._lock = threading.RLock()
        self._conn: Connection | None = None
        self._channel = None
        self._reply_to = ""
        self._pending: set[str] = set()
        self._replies: dict[str, dict] = {}
        self._returned = False

    def __enter__(self) -> NamekoRpc:
        self.connect()
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- connection --------------------------------------------------------------------

    def connect(self) -> None:
        """Open the connection and the reply queue (done by the first call otherwise)."""
        with self._lock:
            if self._conn is not None:
                return
            # confirm_publish: publish() returns only once the broker has the message,
            # and a mandatory message that no queue takes is reported before that.
            conn = Connection(self.amqp_uri, connect_timeout=self.connect_timeout,
                              transport_options={"confirm_publish": True})
            try:
                conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0,
                                       timeout=self.connect_timeout)
                channel = conn.channel()
                channel.events["basic_return"].add(self._on_return)
                reply_key = uuid.uuid4().hex
                reply_queue = Queue(
                    f"rpc.reply-{self.client_name}-{reply_key}",
                    exchange=Exchange(RPC_EXCHANGE, type="topic", durable=True),
                    routing_key=reply_key,
                    exclusive=True,  # deleted by the broker when this connection closes
                )
                consumer = Consumer(channel, queues=[reply_queue], callbacks=[self._on_reply],
                                    accept=["json"], no_ack=True)
                consumer.consume()
            except Exception as exc:
                conn.release()
                raise BrokerUnavailable(f"cannot reach the AMQP broker: {exc}") from exc
            self._conn, self._channel, self._reply_to = conn, channel, reply_key

    def close(self) -> None:
        with self._lock:
            conn, self._conn, self._channel = self._conn, None, None
            self._pending.clear()
            self._replies.clear()
            if conn is not None:
                try:
                    conn.release()
                except Exception:  # closing a connection that already broke
                    pass

    # -- public API --------------------------------------------------------------------

    def call(self, service: str, method: str, /, *args: Any, **kwargs: Any) -> Any:
        """The result of `service.method(*args, **kwargs)` (service and method are
        positional-only, so kwargs may use those names too).

        Raises RemoteError when the method raised, RpcTimeout without a reply in
        `timeout` seconds, UnknownService when no such service ever ran on this vhost,
        BrokerUnavailable when the broker cannot be reached.
        """
        return self.request(service, method, args, kwargs)

    def request(self, service: str, method: str, args: list | tuple = (),
                kwargs: dict[str, Any] | None = None, *, scope: str | None = None) -> Any:
        """call() with the arguments as a list and a dict, and the credential's scope
        named (default: the method's name; what a saga step uses is the action's)."""
        headers = {}
        if self.credentials is not None:
            from shopctl.service_auth import NAMEKO_HEADER

            headers[NAMEKO_HEADER] = self.credentials.token(service, scope or method)
        with self._lock:
            self.connect()
            correlation_id = uuid.uuid4().hex
            exchange = Exchange(RPC_EXCHANGE, type="topic", durable=True)
            self._pending.add(correlation_id)
            try:
                self._publish(
                    {"args": list(args), "kwargs": kwargs or {}},
                    exchange=exchange,
                    routing_key=f"{service}.{method}",
                    mandatory=True,
                    reply_to=self._reply_to,
                    correlation_id=correlation_id,
                    expiration=self.timeout,
                    headers=headers,
                )
                if self._returned:
                    raise UnknownService(f"no service {service!r} on the broker")
                reply = self._wait_for(correlation_id)
            finally:
                self._pending.discard(correlation_id)
        error = reply.get("error")
        if error:
            raise RemoteError(
                str(error.get("exc_type")), str(error.get("value", "")),
                exc_path=error.get("exc_path"), exc_args=error.get("exc_args"),
            )
        return reply.get("result")

    def publish_event(self, source_service: str, event_type: str, payload: Any) -> None:
        """Publish an event as if `source_service` had dispatched it (returns once the
        broker has it; it is dropped when no handler queue is bound)."""
        with self._lock:
            self.connect()
            self._publish(
                payload,
                exchange=Exchange(f"{source_service}.events", type="topic", durable=True),
                routing_key=event_type,
                mandatory=False,
            )

    # -- internals (called with the lock held) -----------------------------------------

    def _publish(self, body: Any, *, exchange: Exchange, **properties: Any) -> None:
        self._returned = False
        try:
            Producer(self._channel).publish(
                body, exchange=exchange, declare=[exchange], serializer="json",
                delivery_mode=PERSISTENT, retry=False, **properties,
            )
        except self._conn.connection_errors as exc:
            self.close()
            raise BrokerUnavailable(f"lost the AMQP connection: {exc}") from exc

    def _wait_for(self, correlation_id: str) -> dict:
        deadline = time.monotonic() + self.timeout
        while correlation_id not in self._replies:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RpcTimeout(f"no reply within {self.timeout:g}s")
            try:
                self._conn.drain_events(timeout=remaining)
            except TimeoutError:
                continue  # the deadline check above decides
            except self._conn.connection_errors as exc:
                self.close()
                raise BrokerUnavailable(f"lost the AMQP connection: {exc}") from exc
        return self._replies.pop(correlation_id)

    def _on_reply(self, body: dict, message) -> None:
        correlation_id = message.properties.get("correlation_id")
        # Replies to calls that already timed out are dropped here.
        if correlation_id in self._pending:
            self._replies[correlation_id] = body

    def _on_return(self, exc, exchange, routing_key, message) -> None:
        # With publisher confirms the broker sends basic.return before its ack, so this
        # has run by the time _publish() returns.
        self._returned = True
