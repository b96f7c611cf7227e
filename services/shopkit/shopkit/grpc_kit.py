"""Service credentials on gRPC (shopkit.service_auth): the server's check and the
client's side.

    scopes = protected_methods(pb2.DESCRIPTOR.services_by_name["Inventory"],
                               open=("CheckStock",))
    grpc.server(pool, interceptors=[ServiceAuthInterceptor(Guard(key, service), scopes)])

Every method of the service is protected (so a method added later is too) but those
named `open`; each needs the scope named like the action shopctl's gRPC convention
would call it by: ReserveStock -> reserve_stock. The grpc.health.v1 service and any
other method not in `scopes` stay open. A refusal is UNAUTHENTICATED or
PERMISSION_DENIED, sent before the request is even parsed.

Imported by gRPC services only (it needs grpcio; the kit itself does not).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping

import grpc

from shopkit.service_auth import METADATA_KEY, Caller, Guard, Refused


def action_name(method: str) -> str:
    """ReserveStock -> reserve_stock: the saga action a gRPC method answers to by
    shopctl's convention (the reverse of its book_slot -> BookSlot)."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", method).lower()


def protected_methods(service, open: Iterable[str] = ()) -> dict[str, str]:
    """{"/package.Service/Method": scope} for every method of `service` (a protobuf
    ServiceDescriptor) except those named in `open`; scope = action_name(Method)."""
    left_open = set(open)
    unknown = left_open - set(service.methods_by_name)
    if unknown:
        raise ValueError(f"{service.full_name} has no method {sorted(unknown)}")
    return {f"/{service.full_name}/{name}": action_name(name)
            for name in service.methods_by_name if name not in left_open}


def _refusal(handler: grpc.RpcMethodHandler, refused: Refused) -> grpc.RpcMethodHandler:
    """A handler of the same shape as `handler` that aborts with the refusal."""
    code = grpc.StatusCode[refused.grpc_code]

    def abort(_request, context):
        context.abort(code, str(refused))

    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(abort)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(abort)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(abort)
    return grpc.unary_unary_rpc_method_handler(abort)


class ServiceAuthInterceptor(grpc.ServerInterceptor):
    """Refuses a call to a method of `scopes` (full method name -> scope) unless its
    metadata carries a service credential granting that scope here."""

    def __init__(self, guard: Guard, scopes: Mapping[str, str]):
        self._guard = guard
        self._scopes = dict(scopes)

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        scope = self._scopes.get(handler_call_details.method)
        if handler is None or scope is None:
            return handler
        token = next((value for key, value in handler_call_details.invocation_metadata or ()
                      if key == METADATA_KEY), None)
        try:
            self._guard.check(token, scope)
        except Refused as exc:
            return _refusal(handler, exc)
        return handler


class CredentialInterceptor(grpc.UnaryUnaryClientInterceptor):
    """Client side: adds a fresh credential for `audience` to every unary call on a
    channel, its scope named after the method (action_name, or `scope_of(method)`):

        channel = grpc.intercept_channel(grpc.insecure_channel(address),
                                         CredentialInterceptor(caller, "inventory"))
    """

    def __init__(self, caller: Caller, audience: str,
                 scope_of: Callable[[str], str] | None = None):
        self._caller = caller
        self._audience = audience
        self._scope_of = scope_of or (lambda method: action_name(method.rsplit("/", 1)[-1]))

    def intercept_unary_unary(self, continuation, client_call_details, request):
        scope = self._scope_of(client_call_details.method)
        metadata = [*(client_call_details.metadata or ()),
                    *self._caller.metadata(self._audience, scope)]
        return continuation(client_call_details._replace(metadata=metadata), request)
