"""Service credentials on nameko RPC (shopkit.service_auth).

    @service_rpc                           # needs the scope "create_order" (the method)
    def create_order(self, ...): ...
    @service_rpc(scope="admin", expected_exceptions=(...))

`service_rpc` is nameko's `rpc` with a check before any worker runs: the credential is
read from the call's context data (the AMQP header `nameko.<CONTEXT_KEY>`), checked
against the service's key and name, and taken out of the context data, so that it is
never passed on to the calls and events the method makes (nameko forwards context
data): a service calling another one mints its own (Caller.context_data). A refused
call gets the remote error Unauthenticated or PermissionDenied, which shopctl's saga
driver treats as a refusal, and runs nothing.

The key is $SHOP_SECRETS_DIR/service_key (or SHOP_SERVICE_KEY); the audience is the
container config's SHOP_SERVICE, else the service class's `name`. A service without a
key fails at start.

Importing this module also makes nameko's queue consumers notice a stop within
`STOP_POLL` seconds (see `quick_stop_consume`).

Imported by nameko services only (it needs nameko; the kit itself does not).
"""

from __future__ import annotations

import logging

from kombu.mixins import ConsumerMixin
from nameko.constants import HEADER_PREFIX
from nameko.messaging import QueueConsumer
from nameko.rpc import Rpc

from shopkit.service_auth import CONTEXT_KEY, Guard, Refused
from shopkit.settings import secret

log = logging.getLogger(__name__)

HEADER_NAME = f"{HEADER_PREFIX}.{CONTEXT_KEY}"
SERVICE_CONFIG_KEY = "SHOP_SERVICE"


class ServiceRpc(Rpc):
    """An RPC entrypoint that runs only for calls with a credential granting `scope`
    (default: the method's name)."""

    def __init__(self, scope: str | None = None, **kwargs):
        self.scope = scope
        super().__init__(**kwargs)

    def setup(self):
        super().setup()
        audience = self.container.config.get(SERVICE_CONFIG_KEY) or self.container.service_name
        self.guard = Guard(secret("service_key", fallback="SHOP_SERVICE_KEY"), audience)

    def handle_message(self, body, message):
        # Raised here, a refusal is the call's error reply (nameko's RpcConsumer sends
        # it, as for MethodNotFound), and no worker starts.
        token = message.headers.pop(HEADER_NAME, None) if message.headers else None
        try:
            self.guard.check(token, self.scope or self.method_name)
        except Refused as exc:
            log.warning("rpc refused", extra={"method": self.method_name, "reason": str(exc)})
            raise
        super().handle_message(body, message)


service_rpc = ServiceRpc.decorator

# How long a queue consumer waits for the broker before it looks at its stop flag again.
# kombu's default is 1 s, and nameko's QueueConsumer needs two such turns to stop (one
# to cancel its consumers, one to see none left): a SIGTERM took 1.3-2.5 s to stop a
# nameko service, most of a `shopctl dev` reload. 0.1 s costs ten idle wake-ups a second;
# py-amqp keeps a frame that a timeout cut in two, so nothing is lost between turns.
STOP_POLL = 0.1


def quick_stop_consume(self, *args, safety_interval: float = STOP_POLL, **kwargs):
    """kombu's ConsumerMixin.consume, waiting `STOP_POLL` seconds per turn."""
    return ConsumerMixin.consume(self, *args, safety_interval=safety_interval, **kwargs)


if QueueConsumer.consume is ConsumerMixin.consume:  # nameko 2.x: not overridden
    QueueConsumer.consume = quick_stop_consume
