"""Service credentials: who may call a service's saga actions, state-changing methods
and admin knobs.

A call between services (and every call of shopctl's saga driver) carries a short-lived
JWT signed with the project's service key ($SHOP_SECRETS_DIR/service_key, apart from
the users' token secret, so neither kind of token passes for the other):

    {"type": "service", "iss": caller, "aud": callee, "scope": [names],
     "iat": now, "exp": now + ttl, "jti": random}

The callee refuses the call unless the credential is an HS256 JWT signed with the key,
not expired (5 s of leeway for clocks), issued for at most MAX_TTL seconds, of type
"service", with `aud` equal to the callee's own name and the operation's scope in
`scope`. The scope of a saga action is the action's name as the shop declares it
(shop.yaml `services.NAME.actions.ACTION`, or the kind's convention: the route
/saga/ACTION, the RPC method ACTION, the gRPC method Action); the service's admin
knobs need ADMIN. Health and metrics stay open.

Transport: HTTP header HEADER (never `Authorization`, which carries users' tokens),
gRPC metadata METADATA_KEY, nameko context data CONTEXT_KEY (sent as the AMQP message
header `nameko.<CONTEXT_KEY>`). Refusals: Unauthenticated (missing, malformed, forged
or expired: HTTP 401, gRPC UNAUTHENTICATED, nameko remote error "Unauthenticated")
and PermissionDenied (a valid credential for another service or scope: 403,
PERMISSION_DENIED, "PermissionDenied"). shopctl's saga driver treats both as refusals
(the saga compensates; no retry).

    guard = Guard(service_key(senv), senv.service)       # the callee
    guard.check(token, "charge")                          # claims, or Refused
    caller = Caller(service_key(senv), senv.service)      # a service calling another
    httpx.post(url, json=..., headers=caller.headers("payments", "charge"))

Framework adapters: shopkit.fastapi_kit.service_guard, shopkit.flask_kit.
service_required, shopkit.grpc_kit.ServiceAuthInterceptor, shopkit.nameko_kit.
service_rpc. A credential is not kept after a check: replays within its minute are
possible for whoever can read the traffic, which on the shop's network is the shop.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import re
import time
import uuid
from collections.abc import Iterable

import jwt

from shopkit.settings import NO_SERVICE_KEY

HEADER = "X-Shop-Service-Token"
METADATA_KEY = "x-shop-service-token"  # gRPC metadata keys are lower case
CONTEXT_KEY = "x-shop-service-token"
TOKEN_TYPE = "service"
ADMIN = "admin"
DEFAULT_TTL = 60
MAX_TTL = 3600  # the longest lifetime a callee accepts (`shopctl token --ttl`)
LEEWAY = 5
MAX_TOKEN_LENGTH = 4096
REQUIRED_CLAIMS = ("exp", "iat", "iss", "aud", "type", "scope")
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")


class Refused(Exception):
    """A call refused for its credential; the message says why (for a 401/403 body)."""

    status = 401
    grpc_code = "UNAUTHENTICATED"


class Unauthenticated(Refused):
    """No credential, or one that is not a valid, unexpired service credential."""


class PermissionDenied(Refused):
    """A valid credential, but for another service or without the operation's scope."""

    status = 403
    grpc_code = "PERMISSION_DENIED"


def _scopes(scope: str | Iterable[str]) -> list[str]:
    return [scope] if isinstance(scope, str) else list(scope)


def mint(key: str, issuer: str, audience: str, scope: str | Iterable[str],
         ttl: float = DEFAULT_TTL, *, now: float | None = None) -> str:
    """A credential from `issuer` for calls to `audience` with `scope` (a name or a
    list), valid for `ttl` seconds from `now` (default: the current time)."""
    issued = int(time.time() if now is None else now)
    claims = {"type": TOKEN_TYPE, "iss": issuer, "aud": audience, "scope": _scopes(scope),
              "iat": issued, "exp": issued + int(ttl), "jti": uuid.uuid4().hex}
    return jwt.encode(claims, key, algorithm="HS256")


def _segment(text: str) -> bytes:
    """The bytes of one base64url segment of a JWT (no padding, nothing but the
    alphabet: what PyJWT also insists on, checked here with one regex)."""
    if not _BASE64URL.fullmatch(text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _no_constants(name: str):
    raise ValueError(f"{name} is not JSON")  # NaN, Infinity: Python's json takes them


def _instant(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) \
        and math.isfinite(value)


def verify(token: str | None, key: str, audience: str, scope: str) -> dict:
    """The claims of `token` when it lets its bearer call `audience`'s operation that
    needs `scope`; Unauthenticated or PermissionDenied otherwise.

    Parsed here rather than by PyJWT's decode (which mint uses to sign): the check is
    the same, HS256 and nothing else, the signature before any claim is read, and it
    costs about a quarter (PyJWT validates base64 a character at a time), which every
    guarded call pays."""
    if not token:
        raise Unauthenticated("missing service credential")
    parts = token.split(".") if len(token) <= MAX_TOKEN_LENGTH else ()
    if len(parts) != 3:
        raise Unauthenticated("invalid service credential")
    head, body, signature = parts
    try:
        header = json.loads(_segment(head), parse_constant=_no_constants)
        signed = hmac.new(key.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
        if not (isinstance(header, dict) and header.get("alg") == "HS256"
                and "crit" not in header and hmac.compare_digest(signed, _segment(signature))):
            raise ValueError("not signed with the service key")
        claims = json.loads(_segment(body), parse_constant=_no_constants)
    except (ValueError, TypeError, RecursionError) as exc:
        raise Unauthenticated("invalid service credential") from exc
    if not isinstance(claims, dict) or any(name not in claims for name in REQUIRED_CLAIMS):
        raise Unauthenticated("invalid service credential")
    issued, expires = claims["iat"], claims["exp"]
    if not (_instant(issued) and _instant(expires)):
        raise Unauthenticated("invalid service credential")
    now = time.time()
    if expires <= now - LEEWAY:
        raise Unauthenticated("service credential expired")
    if issued > now + LEEWAY:
        raise Unauthenticated("service credential issued in the future")
    if claims["type"] != TOKEN_TYPE:
        raise Unauthenticated("not a service credential")
    if expires - issued > MAX_TTL:
        raise Unauthenticated(f"service credential valid for more than {MAX_TTL} s")
    if not isinstance(claims["iss"], str) or not claims["iss"]:
        raise Unauthenticated("invalid service credential issuer")
    granted = claims["scope"]
    if not isinstance(granted, list) or not all(isinstance(s, str) for s in granted):
        raise Unauthenticated("invalid service credential scope")
    if claims["aud"] != audience:
        raise PermissionDenied(f"service credential for another service, not {audience}")
    if scope not in granted:
        raise PermissionDenied(f"service credential without scope {scope!r}")
    return claims


class Guard:
    """The callee's check: credentials for `audience` (the service's own name) signed
    with `key`. A missing key is a configuration error, raised here at start-up."""

    def __init__(self, key: str | None, audience: str):
        if not key:
            raise RuntimeError(NO_SERVICE_KEY)
        self._key = key
        self.audience = audience

    def check(self, token: str | None, scope: str) -> dict:
        """The credential's claims when it grants `scope` here; Refused otherwise."""
        return verify(token, self._key, self.audience, scope)


class Caller:
    """The caller's side: a fresh credential for every call, in each transport's shape.
    `issuer` is the calling service's name (shopctl's saga driver says "shopctl")."""

    def __init__(self, key: str | None, issuer: str, ttl: float = DEFAULT_TTL):
        if not key:
            raise RuntimeError(NO_SERVICE_KEY)
        self._key = key
        self.issuer = issuer
        self.ttl = ttl

    def token(self, audience: str, scope: str | Iterable[str]) -> str:
        return mint(self._key, self.issuer, audience, scope, self.ttl)

    def headers(self, audience: str, scope: str | Iterable[str]) -> dict[str, str]:
        """HTTP headers for a call to `audience` needing `scope`."""
        return {HEADER: self.token(audience, scope)}

    def metadata(self, audience: str, scope: str | Iterable[str]) -> tuple[tuple[str, str]]:
        """gRPC metadata (add the call's own pairs to it)."""
        return ((METADATA_KEY, self.token(audience, scope)),)

    def context_data(self, audience: str, scope: str | Iterable[str]) -> dict[str, str]:
        """Nameko context data, e.g. ClusterRpcProxy(config, context_data=...)."""
        return {CONTEXT_KEY: self.token(audience, scope)}
