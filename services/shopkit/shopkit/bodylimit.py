"""A request body size limit for every HTTP service: 413 with a small JSON body.

`BodyLimit` wraps an ASGI app (FastAPI: `app.add_middleware(BodyLimit, max_bytes=...)`),
`WsgiBodyLimit` a WSGI app (Flask: `app.wsgi_app = WsgiBodyLimit(app.wsgi_app, ...)`).
Both answer 413 before the app runs when Content-Length says too much; a body without
one (chunked) is read up to the limit first and handed on from memory, so no app ever
sees more than `max_bytes` of it. A bounded body is read by the app anyway, so this
costs no memory the app would not use.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterable

DEFAULT_MAX_BODY = 1024 * 1024  # 1 MiB: far above any request body of the shop


def too_large_message(max_bytes: int) -> str:
    return f"request body larger than {max_bytes} bytes"


def _declared_length(value: bytes | str | None) -> int | None:
    """Content-Length as a number; None when absent or not a number (the server
    refuses those itself)."""
    if value is None:
        return None
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    text = text.strip()
    return int(text) if text.isascii() and text.isdigit() else None


class BodyLimit:
    """ASGI middleware: 413 {"detail": ...} (FastAPI's error shape) for a request body
    over `max_bytes`."""

    def __init__(self, app, max_bytes: int = DEFAULT_MAX_BODY):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or ())
        declared = _declared_length(headers.get(b"content-length"))
        if declared is not None and declared > self.max_bytes:
            await self._too_large(send)
            return
        first, size, chunks = None, 0, []
        while first is None:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                first = message
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._too_large(send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                first = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        pending = [first]

        async def replay():
            return pending.pop() if pending else await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, send) -> None:
        body = json.dumps({"detail": too_large_message(self.max_bytes)}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


class WsgiBodyLimit:
    """WSGI middleware: 413 {"error": "content_too_large", "message"} (the Flask
    services' error shape) for a request body over `max_bytes`."""

    def __init__(self, app, max_bytes: int = DEFAULT_MAX_BODY):
        self.app = app
        self.max_bytes = max_bytes

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        declared = _declared_length(environ.get("CONTENT_LENGTH") or None)
        if declared is not None and declared > self.max_bytes:
            return self._too_large(start_response)
        if declared is None and environ.get("wsgi.input") is not None:
            # No length (chunked, where the server passes it on): read at most one byte
            # past the limit, then give the app what was read.
            body = environ["wsgi.input"].read(self.max_bytes + 1)
            if len(body) > self.max_bytes:
                return self._too_large(start_response)
            environ["wsgi.input"] = io.BytesIO(body)
            environ["CONTENT_LENGTH"] = str(len(body))
            environ.pop("wsgi.input_terminated", None)
        return self.app(environ, start_response)

    def _too_large(self, start_response: Callable) -> list[bytes]:
        body = json.dumps({"error": "content_too_large",
                           "message": too_large_message(self.max_bytes)}).encode()
        # No Connection header: WSGI leaves hop-by-hop headers to the server.
        start_response("413 Content Too Large", [("Content-Type", "application/json"),
                                                 ("Content-Length", str(len(body)))])
        return [body]
