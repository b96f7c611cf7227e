"""Issue 13, against main.py as a real process: every malformed request gets a 4xx
with a small body, never a 500, and /me checks tokens as every service does."""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import httpx
import jwt
import pytest
from shopkit.testing import post_json_bytes, running_service

SERVICE_DIR = Path(__file__).resolve().parents[1]
ACCOUNT = {"email": "first@example.com", "password": "long enough", "name": "First"}


@pytest.fixture(scope="module")
def users(tmp_path_factory):
    """One users process for the module, with user 1 registered; its secret attached."""
    secret = secrets.token_urlsafe(32)
    with running_service(tmp_path_factory.mktemp("users"), SERVICE_DIR,
                         SHOP_JWT_SECRET=secret) as service:
        service.secret = secret
        registered = httpx.post(f"{service.url}/register", json=ACCOUNT)
        assert registered.json()["id"] == 1
        yield service


def post(users, path: str, raw: bytes) -> httpx.Response:
    return post_json_bytes(f"{users.url}{path}", raw)


def token(users, **claims) -> str:
    now = int(time.time())
    payload = {"sub": "1", "type": "access", "iat": now, "exp": now + 300, **claims}
    return jwt.encode({k: v for k, v in payload.items() if v is not None}, users.secret,
                      "HS256")


def me(users, bearer: str, scheme: str = "Bearer") -> httpx.Response:
    return httpx.get(f"{users.url}/me", headers={"Authorization": f"{scheme} {bearer}"})


def assert_no_server_error(users) -> None:
    assert "unhandled error" not in users.logs()


@pytest.mark.parametrize("path", ["/register", "/login"])
@pytest.mark.parametrize("depth", [1000, 100_000])
def test_json_nested_deeply_is_a_400(users, path, depth):
    response = post(users, path, b"[" * depth + b"]" * depth)

    assert response.status_code in (400, 413), response.text
    assert response.json()["error"] in ("bad_request", "content_too_large")
    assert_no_server_error(users)


@pytest.mark.parametrize("path", ["/register", "/login"])
@pytest.mark.parametrize("field", ["email", "password", "name"])
def test_a_lone_surrogate_in_any_field_is_a_400(users, path, field):
    body = {"email": "someone@example.com", "password": "long enough", "name": "N"}
    raw = ('{' + ", ".join(f'"{k}": "{v}"' for k, v in body.items()) + '}').encode()
    raw = raw.replace(f'"{field}": "'.encode(), f'"{field}": "\\ud800'.encode())

    response = post(users, path, raw)

    assert response.status_code == 400, response.text
    assert response.json()["error"] == "bad_request"
    assert_no_server_error(users)


def test_nan_is_no_json(users):
    response = post(users, "/login", b'{"email": NaN, "password": Infinity}')

    assert response.status_code == 400
    assert_no_server_error(users)


@pytest.mark.parametrize("sub", ["99999999999999999999", "\u00b2", "\u0661", "01", "-1", "0"])
def test_me_with_a_subject_that_is_not_plain_digits_is_a_401(users, sub):
    response = me(users, token(users, sub=sub))

    assert response.status_code == 401, response.text
    assert response.json() == {"error": "unauthorized", "message": "invalid token subject"}
    assert_no_server_error(users)


@pytest.mark.parametrize(("claims", "message"), [
    ({"exp": None}, "invalid token"),
    ({"type": None}, "invalid token"),
    ({"type": "id"}, "not an access token"),
], ids=["no-exp", "no-type", "id-token"])
def test_me_refuses_what_other_services_refuse(users, claims, message):
    response = me(users, token(users, **claims))

    assert response.status_code == 401
    assert response.json()["message"] == message


def test_me_takes_the_scheme_in_any_case_as_other_services_do(users):
    for scheme in ("bearer", "BEARER"):
        response = me(users, token(users), scheme=scheme)
        assert response.status_code == 200, scheme
        assert response.json()["id"] == 1


def test_a_users_token_passes_the_shared_check(users):
    login = httpx.post(f"{users.url}/login", json=ACCOUNT)

    assert me(users, login.json()["access_token"]).json()["email"] == ACCOUNT["email"]


def test_a_body_over_16_kib_is_a_413_chunked_or_not(users):
    big = b'{"email": "' + b"x" * 20_000 + b'"}'

    for chunked in (False, True):
        response = post_json_bytes(f"{users.url}/register", big, chunked)
        assert response.status_code == 413
        assert response.json()["error"] == "content_too_large"
        assert len(response.content) < 200
