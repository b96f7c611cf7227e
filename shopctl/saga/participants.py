"""Live participant calls: the engine's Actions over HTTP, Nameko RPC and gRPC.

Each call follows its ActionSpec (shopctl.saga.contract): the request is rendered from
the saga's data, sent with the call's idempotency key, timeout and a fresh service
credential for the called service and action (when given `credentials`), and the answer is
classified as a result, a refusal (StepFailure retryable=False) or a failure that may
pass later (retryable=True). An HTTP or gRPC call goes to the instance the endpoints
pick next (shopctl.saga.resolver); when that instance does not take it (connection
refused or dropped, connect timeout, 503, UNAVAILABLE) it is marked suspect and the
call, idempotent by its key, goes once more at once to another instance, before the
engine's backoff sees the failure. Connections are opened on first use and shared by
the steps of a process; close() ends them.
"""

from __future__ import annotations

import functools
import json
import threading
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shopctl.saga import template
from shopctl.saga.actions import StepCall, StepFailure
from shopctl.saga.contract import (
    ActionSpec,
    Envelope,
    outcome_http,
    refused_grpc,
    refused_nameko,
)
from shopctl.saga.endpoints import Endpoints
from shopctl.service_auth import HEADER, METADATA_KEY, Credentials

SpecLookup = Callable[[str], ActionSpec]


class Participants:
    """Runs "SERVICE.ACTION" calls against the live services (the engine's Actions).

    `protos`: the project's protos folder (gRPC contracts). `lookup(call)`: the spec for
    a call whose saga was started without one frozen in its definition. `credentials`:
    what signs each call's service credential (none: calls carry no credential)."""

    def __init__(self, endpoints: Endpoints, protos: Path | None = None,
                 lookup: SpecLookup | None = None, credentials: Credentials | None = None):
        from shopctl.saga.protos import ProtoSet

        self.endpoints = endpoints
        self.credentials = credentials
        self.protos = ProtoSet(protos) if protos is not None else None
        self.lookup = lookup
        self._lock = threading.Lock()
        self._rpcs: dict[float, Any] = {}
        self._http = None
        self._channels: dict[str, Any] = {}

    # -- the Actions contract ---------------------------------------------------------

    def spec(self, call: str, step_call: StepCall | None = None) -> ActionSpec:
        if step_call is not None and step_call.spec:
            return ActionSpec.from_dict(step_call.spec)
        if self.lookup is None:
            raise StepFailure(f"no contract known for {call}", retryable=False,
                              code="UNKNOWN_ACTION")
        return self.lookup(call)

    def run(self, call: str, step_call: StepCall) -> dict[str, Any]:
        spec = self.spec(call, step_call)
        envelope = Envelope(step_call.saga_id, step_call.saga, step_call.step,
                            step_call.phase, step_call.key, step_call.forward_key,
                            step_call.reason, dict(step_call.input), dict(step_call.context))
        data = envelope.data(step_call.results)
        try:
            if spec.kind == "nameko":
                response = self._nameko(spec, envelope, data, step_call.timeout)
            elif spec.kind == "grpc":
                response = self._grpc(spec, envelope, data, step_call.timeout)
            else:
                response = self._http_call(spec, envelope, data, step_call)
            return _result(spec, response, data)
        except template.TemplateError as exc:
            raise StepFailure(f"{spec.call}: {exc}", retryable=False, code="TEMPLATE") from exc

    def close(self) -> None:
        for rpc in self._rpcs.values():
            rpc.close()
        if self._http is not None:
            self._http.close()
        for channel in self._channels.values():
            channel.close()

    # -- nameko -----------------------------------------------------------------------

    def _nameko(self, spec: ActionSpec, envelope: Envelope, data: dict, timeout: float) -> Any:
        from shopctl.nameko_rpc import NamekoRpcError, RemoteError, RpcTimeout

        if spec.request is None:
            args, kwargs = [envelope.to_dict()], {}
        else:
            rendered = template.render(spec.request, data)
            args, kwargs = (rendered, {}) if isinstance(rendered, list) else ([], rendered)
        where = f"{spec.service}.{spec.method}"
        try:
            return self._rpc(timeout).request(spec.service, spec.method, args, kwargs,
                                              scope=spec.action)
        except RemoteError as exc:
            raise StepFailure(f"{where}: {exc}", retryable=not refused_nameko(spec, exc.exc_type),
                              code=exc.exc_type) from exc
        except RpcTimeout as exc:
            raise StepFailure(f"{where}: {exc}", retryable=True, code="TIMEOUT") from exc
        except NamekoRpcError as exc:  # broker down, service never ran on this vhost
            raise StepFailure(f"{where}: {exc}", retryable=True,
                              code=type(exc).__name__) from exc

    def _rpc(self, timeout: float):
        """A NamekoRpc whose timeout is the step's (one client per distinct timeout,
        since the client's timeout is fixed at construction)."""
        from shopctl.nameko_rpc import NamekoRpc

        if not self.endpoints.amqp:
            raise StepFailure("no AMQP broker for nameko services (infra.rabbitmq is "
                              "disabled)", retryable=False, code="NO_BROKER")
        with self._lock:
            if timeout not in self._rpcs:
                self._rpcs[timeout] = NamekoRpc(self.endpoints.amqp, timeout=timeout,
                                                client_name="shopctl-saga",
                                                credentials=self.credentials)
            return self._rpcs[timeout]

    # -- grpc -------------------------------------------------------------------------

    def grpc_method(self, spec: ActionSpec):
        if self.protos is None:
            raise StepFailure(f"{spec.call}: no protos folder to find {spec.method} in",
                              retryable=False, code="NO_PROTO")
        from shopctl.saga.protos import ProtoError

        try:
            return self.protos.find(spec.method, spec.service)
        except ProtoError as exc:
            raise StepFailure(f"{spec.call}: {exc}", retryable=False, code="NO_METHOD") from exc

    def _grpc(self, spec: ActionSpec, envelope: Envelope, data: dict, timeout: float) -> Any:
        import grpc
        from google.protobuf import json_format

        method = self.grpc_method(spec)
        fields = {f.name for f in method.input.DESCRIPTOR.fields}
        if spec.request is None:
            flat = {**envelope.context, **{k: v for k, v in envelope.to_dict().items()
                                           if k not in ("input", "context")},
                    "idempotency_key": envelope.key}
            body = {k: v for k, v in flat.items() if k in fields and v is not None}
        else:
            body = template.render(spec.request, data)
        try:
            request = json_format.ParseDict(body, method.input(), ignore_unknown_fields=True)
        except (json_format.ParseError, TypeError, ValueError) as exc:
            raise StepFailure(f"{spec.call}: cannot build {method.input.DESCRIPTOR.full_name}: "
                              f"{exc}", retryable=False, code="BAD_REQUEST") from exc
        metadata = [("idempotency-key", envelope.key)]
        if self.credentials is not None:
            metadata.append((METADATA_KEY, self.credentials.token(spec.service, spec.action)))
        address, tried = self.endpoints.address(spec.service), []
        while True:
            stub = self._channel(address).unary_unary(
                method.full_name, request_serializer=method.input.SerializeToString,
                response_deserializer=method.output.FromString)
            try:
                return _message_dict(stub(request, timeout=timeout, metadata=metadata))
            except grpc.RpcError as exc:
                code = exc.code()
                failure = StepFailure(
                    f"{method.full_name.lstrip('/')}: {code.name}: {exc.details()}",
                    retryable=not refused_grpc(spec, code.name), code=code.name)
                if code != grpc.StatusCode.UNAVAILABLE or not failure.retryable:
                    raise failure from exc
                address = self._elsewhere(spec.service, address, tried)
                if address is None:
                    raise failure from exc

    def _elsewhere(self, service: str, failed: str, tried: list[str]) -> str | None:
        """After `failed` could not take a call: mark it suspect and name the instance to
        try the same (idempotent) call on at once, or None to leave the retry to the
        engine's backoff. One immediate retry per call: more would hide an outage of the
        whole service behind a burst of calls."""
        self.endpoints.suspect(service, failed)
        tried.append(failed)
        return self.endpoints.pick(service, avoid=tried) if len(tried) == 1 else None

    def _channel(self, address: str):
        import grpc

        with self._lock:
            if address not in self._channels:
                self._channels[address] = grpc.insecure_channel(address)
            return self._channels[address]

    # -- http -------------------------------------------------------------------------

    def _http_call(self, spec: ActionSpec, envelope: Envelope, data: dict,
                   step_call: StepCall) -> Any:
        # httpcore is httpx's own transport (connection pool, keep-alive, timeouts)
        # without the client layer (cookies, auth, redirects, URL merging), which costs
        # about as much CPU as the rest of the call and which these calls do not need.
        body = envelope.to_dict() if spec.request is None else template.render(spec.request,
                                                                                 data)
        path = _render_path(spec.path or f"/saga/{spec.action}", data)
        query = ""
        headers = [(b"Idempotency-Key", envelope.key.encode()),
                   (b"Accept", b"application/json")]
        if self.credentials is not None:
            token = self.credentials.token(spec.service, spec.action)
            headers.append((HEADER.encode(), token.encode()))
        content = b""
        if spec.method in ("GET", "DELETE"):
            if isinstance(body, dict) and body:
                query = ("&" if "?" in path else "?") + urllib.parse.urlencode(
                    {k: v if isinstance(v, str) else json.dumps(v) for k, v in body.items()})
        else:
            headers.append((b"Content-Type", b"application/json"))
            content = json.dumps(body).encode()
        t = step_call.timeout
        timeout = {"connect": t, "read": t, "write": t, "pool": t}
        where = f"{spec.method} {spec.service}{path}"
        address, tried = self.endpoints.address(spec.service), []
        while True:
            url = f"http://{address}{path}{query}"
            try:
                resp = self._pool().request(spec.method, url, headers=headers,
                                            content=content, extensions={"timeout": timeout})
            except _transport_errors() as exc:  # connect errors, timeouts: may pass later
                failure = StepFailure(f"{where}: {type(exc).__name__}: {exc}", retryable=True,
                                      code="TRANSPORT")
                # Not after a read timeout: the instance is alive but slow, and the same
                # call elsewhere at once would double the load that made it slow.
                if not isinstance(exc, _unreachable_errors()):
                    raise failure from exc
                address = self._elsewhere(spec.service, address, tried)
                if address is None:
                    raise failure from exc
                continue
            if resp.status == 503 and outcome_http(spec, 503) == "retry":
                failed = address
                address = self._elsewhere(spec.service, address, tried)
                if address is not None:
                    continue
                address = failed
            break
        try:
            answer = json.loads(resp.content) if resp.content else None
        except ValueError:
            answer = None
        verdict = outcome_http(spec, resp.status)
        if verdict == "ok":
            return answer
        detail = resp.content[:200].decode(errors="replace")
        status = str(resp.status)
        if isinstance(answer, dict):
            status = str(answer.get("status") or answer.get("error") or status)
            detail = str(answer.get("reason") or answer.get("detail") or status)
        raise StepFailure(f"{where}: {resp.status} {status}: {detail}",
                          retryable=verdict == "retry", code=status)

    def _pool(self):
        import httpcore

        with self._lock:
            if self._http is None:
                self._http = httpcore.ConnectionPool()
            return self._http


def _render_path(path: str, data: dict) -> str:
    if "{{" not in path:
        return path
    return template.render_text(path, data, lambda text: urllib.parse.quote(text, safe=""))


def _result(spec: ActionSpec, response: Any, data: dict) -> dict[str, Any]:
    if spec.result is not None:
        result = template.render(spec.result, {**data, "response": response})
        return result if isinstance(result, dict) else {spec.action: result}
    if isinstance(response, dict):
        return response
    return {} if response is None else {spec.action: response}


def _message_dict(message) -> dict[str, Any]:
    from google.protobuf import json_format

    try:
        return json_format.MessageToDict(message, preserving_proto_field_name=True,
                                         always_print_fields_with_no_presence=True)
    except TypeError:  # protobuf < 5.26 names the option differently
        return json_format.MessageToDict(message, preserving_proto_field_name=True,
                                         including_default_value_fields=True)


@functools.cache
def _transport_errors() -> tuple[type[Exception], ...]:
    """Every failure of httpcore's transport (httpx raises its own for the same causes)."""
    import httpcore

    return (httpcore.TimeoutException, httpcore.NetworkError, httpcore.ProtocolError,
            httpcore.ProxyError, httpcore.UnsupportedProtocol)


@functools.cache
def _unreachable_errors() -> tuple[type[Exception], ...]:
    """Failures that say the instance did not take the call (refused, reset, closed,
    no connection in time): the same call may go to another instance at once."""
    import httpcore

    return (httpcore.ConnectError, httpcore.ConnectTimeout, httpcore.ReadError,
            httpcore.WriteError, httpcore.RemoteProtocolError)
