"""The service credentials shopctl attaches to the calls it makes to a shop's services.

Services check a short-lived JWT on their saga actions, state-changing operations and
admin knobs (the services' side: shopkit.service_auth, which documents the contract).
shopctl signs one for every call its saga driver makes, and for an operator who calls
a service by hand (`shopctl token`), with the project's service key
(.shopctl/secrets/service_key, made by ProjectState.service_key):

    {"type": "service", "iss": "shopctl", "aud": SERVICE, "scope": [SCOPE, ...],
     "iat": now, "exp": now + ttl, "jti": random}

It travels as the HTTP header HEADER, the gRPC metadata METADATA_KEY, or nameko's
context data CONTEXT_KEY (the AMQP header `nameko.<CONTEXT_KEY>`). The scope of a saga
call is the action's name, so a service requires, for each of its operations, the name
under which a shop calls it (by the kind's convention, the route /saga/ACTION, the RPC
method ACTION or the gRPC method Action).

HS256 is signed here with the standard library, so shopctl needs no JWT library; a test
checks these credentials with the services' verifier.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Iterable
from pathlib import Path

HEADER = "X-Shop-Service-Token"
METADATA_KEY = "x-shop-service-token"
CONTEXT_KEY = "x-shop-service-token"
NAMEKO_HEADER = f"nameko.{CONTEXT_KEY}"
ISSUER = "shopctl"
ADMIN = "admin"
DEFAULT_TTL = 60
MAX_TTL = 3600  # services refuse a credential issued for longer
_JWT_HEADER = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=")


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def mint(key: str, audience: str, scope: str | Iterable[str], *, issuer: str = ISSUER,
         ttl: int = DEFAULT_TTL, now: float | None = None) -> str:
    """A credential for calls to `audience` needing `scope` (a name or several)."""
    issued = int(time.time() if now is None else now)
    claims = {"type": "service", "iss": issuer, "aud": audience,
              "scope": [scope] if isinstance(scope, str) else list(scope),
              "iat": issued, "exp": issued + int(ttl), "jti": uuid.uuid4().hex}
    return sign(key, claims)


def sign(key: str, claims: dict) -> str:
    """`claims` as an HS256 JWT signed with `key`."""
    signed = _JWT_HEADER + b"." + _b64(json.dumps(claims, separators=(",", ":")).encode())
    signature = hmac.new(key.encode(), signed, hashlib.sha256).digest()
    return (signed + b"." + _b64(signature)).decode()


class Credentials:
    """Fresh credentials signed with `key`, one per call (`token`)."""

    def __init__(self, key: str, issuer: str = ISSUER, ttl: int = DEFAULT_TTL):
        if not key:
            raise ValueError("no service key to sign credentials with")
        self._key = key
        self.issuer = issuer
        self.ttl = ttl

    def __repr__(self) -> str:  # never the key
        return f"Credentials(issuer={self.issuer!r}, ttl={self.ttl})"

    def token(self, service: str, scope: str | Iterable[str], ttl: int | None = None) -> str:
        return mint(self._key, service, scope, issuer=self.issuer,
                    ttl=self.ttl if ttl is None else ttl)

    @classmethod
    def for_project(cls, root: Path, issuer: str = ISSUER) -> Credentials:
        """Signed with the project's service key (made on first use, as `up` does)."""
        from shopctl.state import ProjectState

        return cls(ProjectState(root).service_key(), issuer)


def token_for(config, service: str, scopes: list[str], ttl: int = DEFAULT_TTL) -> str:
    """What `shopctl token` prints: a credential for calling `service` of the shop
    `config` describes by hand."""
    from shopctl.errors import UsageError

    config.service(service)  # UsageError naming the services when there is no such one
    if not scopes:
        raise UsageError("a credential needs a scope",
                         hint=f"--scope ACTION (as the service names it) or --scope {ADMIN}")
    if not 1 <= ttl <= MAX_TTL:
        raise UsageError(f"--ttl must be 1 to {MAX_TTL} seconds (services refuse longer)")
    return Credentials.for_project(config.root).token(service, scopes, ttl)
