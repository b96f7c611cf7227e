"""The participant contract: how a saga step reaches "SERVICE.ACTION" of any service.

A service takes part in sagas through its kind's convention, with no configuration, or
through actions it declares in shop.yaml under `services.NAME.actions.ACTION`. Either way
the step's action resolves into an ActionSpec, which is frozen into the saga's log row
when the saga starts, so a resume months later calls exactly what the saga started with.

Every call carries an idempotency key (`saga.key`): the same on every retry and resume of
that call, different for the compensation (`saga.forward_key` is the forward call's).

HTTP (flask, fastapi)
    convention   POST /saga/ACTION with the envelope below as JSON body
    method       GET | POST | PUT | PATCH | DELETE (default POST)
    path         default /saga/ACTION; may hold {{ }} expressions (URL-quoted)
    request      the JSON body (GET and DELETE: query parameters); default the envelope
    headers      Idempotency-Key: the call's key; Content-Type: application/json
    outcome      2xx success; `retry` codes, else 408, 425, 429 and 5xx, may pass later;
                 `refused` codes and every other answer are refusals (not retried; the
                 saga compensates). Codes may be written as 404 or "4xx".
nameko
    convention   SERVICE.ACTION(envelope): the RPC method named like the action, with the
                 envelope as its one argument
    method       the RPC method (default: the action's name)
    request      a mapping (keyword arguments) or a list (positional arguments);
                 default [envelope]
    outcome      a remote error whose type is in `refused`, is SagaRefused, is nameko's
                 own MethodNotFound / IncorrectSignature / MalformedRequest, or is a
                 refused credential (Unauthenticated / PermissionDenied) is a refusal;
                 every other error (and a timeout, or the broker down) may pass later
grpc
    convention   the method named ACTION in CamelCase (book_slot -> BookSlot) of the
                 service's own proto in the project's protos/ (protos/SERVICE.proto when
                 it exists, else any .proto there; it must be unambiguous); the request
                 message is filled from the context and the envelope's fields by name
                 (saga_id, step, phase, key, forward_key, reason, idempotency_key)
    method       "package.Service/Method", "Service/Method" or "Method"
    request      a mapping in protobuf's JSON form; default: the convention
    outcome      status codes in `refused`, else INVALID_ARGUMENT, NOT_FOUND,
                 ALREADY_EXISTS, FAILED_PRECONDITION, PERMISSION_DENIED, UNAUTHENTICATED,
                 UNIMPLEMENTED and OUT_OF_RANGE are refusals; `retry` and every other code
                 may pass later
All kinds
    result       a template over {response, saga, input, context, steps}: what the step
                 adds to the saga's context; default the response when it is an object
                 (a gRPC reply as protobuf JSON with field names as in the .proto), else
                 {ACTION: response}
    credential   a fresh service credential (shopctl.service_auth): iss "shopctl", aud
                 the service, scope [ACTION]; HTTP header X-Shop-Service-Token, gRPC
                 metadata x-shop-service-token, nameko context data of that name. A
                 service refusing it answers 401/403, UNAUTHENTICATED/PERMISSION_DENIED
                 or Unauthenticated/PermissionDenied: refusals, by the rules above

The envelope: {saga_id, saga, step, phase ("forward" | "compensate"), key, forward_key,
reason (why the saga compensates, else null), input, context}.
"""

from __future__ import annotations

import re
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

from shopctl.saga import template

HTTP_KINDS = frozenset({"flask", "fastapi"})
HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
HTTP_RETRY = ("408", "425", "429", "5xx")
NAMEKO_REFUSED = ("SagaRefused", "MethodNotFound", "IncorrectSignature", "MalformedRequest",
                  "Unauthenticated", "PermissionDenied")
GRPC_CODES = ("OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
              "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
              "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL",
              "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED")
GRPC_REFUSED = ("INVALID_ARGUMENT", "NOT_FOUND", "ALREADY_EXISTS", "FAILED_PRECONDITION",
                "PERMISSION_DENIED", "UNAUTHENTICATED", "UNIMPLEMENTED", "OUT_OF_RANGE")
GRPC_METHOD = re.compile(r"(?:(?:[A-Za-z_][A-Za-z0-9_]*\.)*[A-Za-z_][A-Za-z0-9_]*/)?"
                         r"[A-Za-z_][A-Za-z0-9_]*")
_STATUS = re.compile(r"[1-5](?:\d\d|xx)")
REQUEST_ROOTS = tuple(r for r in template.ROOTS if r != "response")
ENVELOPE_FIELDS = ("saga_id", "saga", "step", "phase", "key", "forward_key", "reason",
                   "input", "context")


@dataclass(frozen=True)
class ActionSpec:
    """One resolved action: everything a participant call needs but the address."""

    service: str
    action: str
    kind: str
    method: str  # HTTP verb | nameko method | gRPC method as written (or by convention)
    path: str | None = None  # HTTP only
    request: Any = None  # template; None: the convention
    result: Any = None  # template; None: the response object
    refused: tuple[str, ...] = ()
    retry: tuple[str, ...] = ()
    declared: bool = False  # from shop.yaml's actions (else the convention)
    timeout: float = 10.0

    @property
    def call(self) -> str:
        return f"{self.service}.{self.action}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-able, without the keys that hold their defaults: every saga's log row
        carries the specs of its calls, so they are kept small."""
        data = {key: value for key, value in asdict(self).items()
                if value != _DEFAULTS.get(key, _REQUIRED)}
        for key in ("refused", "retry"):
            if key in data:
                data[key] = list(data[key])
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ActionSpec:
        return cls(**{**data, "refused": tuple(data.get("refused") or ()),
                      "retry": tuple(data.get("retry") or ())})


_REQUIRED = object()
_DEFAULTS = {f.name: f.default for f in fields(ActionSpec) if f.default is not MISSING}


def camel(action: str) -> str:
    """book_slot -> BookSlot (the gRPC convention's method name)."""
    return "".join(part[:1].upper() + part[1:] for part in action.split("_") if part)


def resolve(service: str, kind: str, action: str, declared: dict[str, Any] | None) -> ActionSpec:
    """The spec of SERVICE.ACTION for a service of `kind`, from its declaration (a
    shop.yaml `actions` entry as a dict, or None) and the kind's convention."""
    d = declared or {}
    refused = tuple(str(code) for code in d.get("refused") or ())
    retry = tuple(str(code) for code in d.get("retry") or ())
    if kind in HTTP_KINDS:
        method = (d.get("method") or "POST").upper()
        path = d.get("path") or f"/saga/{action}"
        return ActionSpec(service, action, kind, method, path, d.get("request"),
                          d.get("result"), refused, retry, declared is not None)
    if kind == "nameko":
        return ActionSpec(service, action, kind, d.get("method") or action, None,
                          d.get("request"), d.get("result"), refused, (), declared is not None)
    if kind == "grpc":
        return ActionSpec(service, action, kind, d.get("method") or camel(action), None,
                          d.get("request"), d.get("result"), refused, retry,
                          declared is not None)
    raise ValueError(f"no saga contract for kind {kind!r}")


def outcome_http(spec: ActionSpec, status: int) -> str:
    """'ok', 'retry' or 'refused' for an HTTP answer."""
    if 200 <= status < 300:
        return "ok"
    if _matches(status, spec.refused):
        return "refused"
    if _matches(status, spec.retry) or _matches(status, HTTP_RETRY):
        return "retry"
    return "refused"


def _matches(status: int, codes: tuple[str, ...]) -> bool:
    text = str(status)
    return any(code == text or (code.endswith("xx") and code[0] == text[0]) for code in codes)


def refused_nameko(spec: ActionSpec, exc_type: str) -> bool:
    return exc_type in spec.refused or exc_type in NAMEKO_REFUSED


def refused_grpc(spec: ActionSpec, code_name: str) -> bool:
    if code_name in spec.refused:
        return True
    return code_name not in spec.retry and code_name in GRPC_REFUSED


# -- checks of declared actions, on shop.yaml's plain data ---------------------------------

Problem = tuple[tuple, str, str | None]  # (path inside the entry, message, hint)


def problems(kind: str, action: str, declared: dict[str, Any]) -> list[Problem]:
    """What is wrong with one `actions` entry of a service of `kind`, as (path inside the
    entry, message, hint). Shapes the schema checks (types of keys) are not repeated."""
    found: list[Problem] = []
    method, path = declared.get("method"), declared.get("path")
    codes = {key: declared.get(key) or [] for key in ("refused", "retry")}
    if kind in HTTP_KINDS:
        if isinstance(method, str) and method.upper() not in HTTP_METHODS:
            found.append((("method",), f"expected an HTTP method ({', '.join(HTTP_METHODS)}), "
                                       f"found {method!r}", None))
        if isinstance(path, str) and not path.startswith("/"):
            found.append((("path",), f"expected a URL path starting with '/', found {path!r}",
                          None))
        for key, values in codes.items():
            for index, code in enumerate(values if isinstance(values, list) else []):
                if not _STATUS.fullmatch(str(code)):
                    found.append(((key, index), f"expected an HTTP status like 409 or '4xx', "
                                                f"found {code!r}", None))
    else:
        if path is not None:
            found.append((("path",), f"a {kind} action has no path (HTTP services only)",
                          "leave 'path' out"))
        if kind == "nameko":
            if isinstance(method, str) and not re.fullmatch(r"[A-Za-z_]\w*", method):
                found.append((("method",), f"expected the RPC method's name, found {method!r}",
                              None))
            if codes["retry"]:
                found.append((("retry",), "nameko errors other than `refused` are retried "
                                          "already", "leave 'retry' out"))
            for index, code in enumerate(codes["refused"]):
                if not (isinstance(code, str) and re.fullmatch(r"[A-Za-z_]\w*", code)):
                    found.append((("refused", index), f"expected a remote exception type "
                                                      f"name, found {code!r}", None))
            request = declared.get("request")
            if request is not None and not isinstance(request, dict | list):
                found.append((("request",), "expected a mapping (keyword arguments) or a "
                                            "list (positional arguments)", None))
        if kind == "grpc":
            if isinstance(method, str) and not GRPC_METHOD.fullmatch(method):
                found.append((("method",), f"expected 'package.Service/Method', "
                                           f"'Service/Method' or 'Method', found {method!r}",
                              None))
            for key, values in codes.items():
                for index, code in enumerate(values if isinstance(values, list) else []):
                    if str(code).upper() not in GRPC_CODES:
                        hint = template_hint(str(code).upper(), GRPC_CODES)
                        found.append(((key, index), f"expected a gRPC status code name, "
                                                    f"found {code!r}", hint))
            request = declared.get("request")
            if request is not None and not isinstance(request, dict | str):
                found.append((("request",), "expected a mapping in the request message's "
                                            "JSON form", None))
    for key, roots in (("request", REQUEST_ROOTS), ("result", template.ROOTS),
                       ("path", REQUEST_ROOTS)):
        for where, message in template.problems(declared.get(key), roots):
            found.append(((key, *where), message, None))
    return found


def template_hint(word: str, choices: tuple[str, ...]) -> str | None:
    from shopctl.config.problems import did_you_mean

    return did_you_mean(word, choices)


@dataclass
class Envelope:
    """What a call knows of its saga (the convention's request; the templates' `saga`)."""

    saga_id: str
    saga: str
    step: str
    phase: str
    key: str
    forward_key: str
    reason: str | None
    input: dict[str, Any] = field(default_factory=dict)
    context: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def data(self, steps: dict[str, Any]) -> dict[str, Any]:
        """The document templates are evaluated against."""
        return {"saga": {"id": self.saga_id, "name": self.saga, "step": self.step,
                         "phase": self.phase, "key": self.key,
                         "forward_key": self.forward_key, "reason": self.reason},
                "input": self.input, "context": self.context, "steps": steps}
