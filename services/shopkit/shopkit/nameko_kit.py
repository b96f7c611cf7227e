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

Imported by nameko services only (it needs nameko; the kit itself does not).
"""

from __future__ import annotations

import logging

from nameko.constants import HEADER_PREFIX
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
