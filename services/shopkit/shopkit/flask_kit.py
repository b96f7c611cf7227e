"""What every Flask service of the shop shares so that bad input gets a 4xx with a small
body, never a 5xx, and every token is checked the same way.

    app = Flask(name)
    harden(app, max_body=...)           # strict JSON, body size limit
    @token_required(secret)             # on views that need a user; claims in g.claims
    @service_required(guard, "hold")    # on views only services may call (service_auth)

Error bodies are the Flask services' shape: {"error": <code>, "message": <text>}.
Imported by Flask services only (it needs flask; the kit itself does not).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps

from flask import Flask, g, jsonify, request
from flask.json.provider import DefaultJSONProvider

from shopkit import jsonbody
from shopkit.bodylimit import DEFAULT_MAX_BODY, WsgiBodyLimit
from shopkit.service_auth import HEADER, Guard, Refused
from shopkit.tokens import InvalidToken, access_claims


class StrictJSONProvider(DefaultJSONProvider):
    """Parses request bodies with shopkit.jsonbody: `request.get_json()` fails (400, or
    None with silent=True) on NaN, lone surrogates, deep nesting and non-UTF-8 bytes
    instead of handing the view a value that breaks later (or raising RecursionError)."""

    def loads(self, s: str | bytes, **kwargs) -> object:
        return jsonbody.loads(s)


def harden(app: Flask, max_body: int = DEFAULT_MAX_BODY) -> None:
    app.json = StrictJSONProvider(app)
    app.wsgi_app = WsgiBodyLimit(app.wsgi_app, max_bytes=max_body)


def unauthorized(message: str):
    """A 401 with a Bearer challenge, in the Flask services' error shape."""
    response = jsonify({"error": "unauthorized", "message": message})
    response.headers["WWW-Authenticate"] = "Bearer"
    return response, 401


def token_required(secret: str) -> Callable:
    """Decorator: run the view only for a request with a valid access token
    (shopkit.tokens), its claims in g.claims; 401 otherwise."""

    def decorate(view: Callable) -> Callable:
        @wraps(view)
        def checked(*args, **kwargs):
            try:
                g.claims = access_claims(request.headers.get("Authorization"), secret)
            except InvalidToken as exc:
                return unauthorized(str(exc))
            return view(*args, **kwargs)

        return checked

    return decorate


def service_required(guard: Guard, scope: str) -> Callable:
    """Decorator: run the view only for a request with a service credential granting
    `scope` (shopkit.service_auth), its claims in g.service; else 401 {"error":
    "unauthorized"} (missing, invalid, expired) or 403 {"error": "forbidden"} (another
    service's, another scope)."""

    def decorate(view: Callable) -> Callable:
        @wraps(view)
        def checked(*args, **kwargs):
            try:
                g.service = guard.check(request.headers.get(HEADER), scope)
            except Refused as exc:
                error = "unauthorized" if exc.status == 401 else "forbidden"
                return jsonify({"error": error, "message": str(exc)}), exc.status
            return view(*args, **kwargs)

        return checked

    return decorate
