"""shopkit.bodylimit: 413 for request bodies over the limit, ASGI and WSGI alike."""

from __future__ import annotations

import asyncio
import io
import json

import pytest
from shopkit.bodylimit import BodyLimit, WsgiBodyLimit

LIMIT = 10


async def _echo(scope, receive, send):
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


def asgi(chunks: list[bytes], length: int | None = None) -> tuple[int, bytes]:
    headers = [] if length is None else [(b"content-length", str(length).encode())]
    scope = {"type": "http", "method": "POST", "path": "/", "headers": headers}
    incoming = [{"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}
                for i, chunk in enumerate(chunks)]
    sent = []

    async def receive():
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    asyncio.run(BodyLimit(_echo, max_bytes=LIMIT)(scope, receive, send))
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


@pytest.mark.parametrize(("chunks", "length"), [
    ([b"x" * 11], 11), ([b"x" * 6, b"x" * 5], None), ([b"x"], 1_000_000)])
def test_asgi_over_the_limit_is_413_with_a_json_detail(chunks, length):
    status, body = asgi(chunks, length)

    assert status == 413
    assert json.loads(body) == {"detail": "request body larger than 10 bytes"}


@pytest.mark.parametrize(("chunks", "length"), [([b"x" * 10], 10), ([b"x" * 5] * 2, None)])
def test_asgi_up_to_the_limit_reaches_the_app_whole(chunks, length):
    assert asgi(chunks, length) == (200, b"x" * 10)


def _wsgi_echo(environ, start_response):
    body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    start_response("200 OK", [])
    return [body]


def wsgi(body: bytes, length: str | None) -> tuple[str, bytes]:
    environ = {"REQUEST_METHOD": "POST", "wsgi.input": io.BytesIO(body)}
    if length is not None:
        environ["CONTENT_LENGTH"] = length
    status = []
    out = WsgiBodyLimit(_wsgi_echo, max_bytes=LIMIT)(environ, lambda s, h: status.append(s))
    return status[0], b"".join(out)


def test_wsgi_over_the_limit_is_413_with_the_flask_error_shape():
    for body, length in ((b"x" * 11, "11"), (b"x" * 11, None)):
        status, answer = wsgi(body, length)
        assert status.startswith("413")
        assert json.loads(answer)["error"] == "content_too_large"


def test_wsgi_up_to_the_limit_reaches_the_app_whole():
    assert wsgi(b"x" * 10, "10") == ("200 OK", b"x" * 10)
    assert wsgi(b"x" * 10, None) == ("200 OK", b"x" * 10)
