"""Behaviour of the users API through Flask's test client."""

from __future__ import annotations

import sqlite3
from datetime import timedelta

import jwt
import pytest
from flask_jwt_extended import create_access_token
from prometheus_client.parser import text_string_to_metric_families
from shopkit.tokens import verify_access_token


def test_register_returns_the_public_account(client):
    resp = client.post(
        "/register", json={"email": " Grace@Example.com ", "password": "s3cret-pass", "name": "G"}
    )

    assert resp.status_code == 201
    body = resp.get_json()
    assert body == {"id": body["id"], "email": "grace@example.com", "name": "G"}
    assert isinstance(body["id"], int)


def test_register_without_name(client):
    resp = client.post("/register", json={"email": "x@example.org", "password": "12345678"})

    assert resp.status_code == 201
    assert resp.get_json()["name"] is None


def test_register_twice_is_a_conflict_whatever_the_case(client, registered):
    resp = client.post(
        "/register", json={"email": registered["email"].upper(), "password": "another-pass"}
    )

    assert resp.status_code == 409
    assert resp.get_json()["error"] == "email_taken"


@pytest.mark.parametrize(
    ("body", "bad_fields"),
    [
        ({"email": "not-an-email", "password": "long enough"}, {"email"}),
        ({"email": "a@b.co", "password": "short"}, {"password"}),
        ({"email": "a b@c.io", "password": "1234567"}, {"email", "password"}),
        ({"password": "long enough"}, {"email"}),
        ({"email": "a@b.co", "password": 12345678}, {"password"}),
        ({"email": "a@b.co", "password": "long enough", "name": 7}, {"name"}),
    ],
)
def test_register_rejects_invalid_fields_with_messages(client, body, bad_fields):
    resp = client.post("/register", json=body)

    assert resp.status_code == 422
    payload = resp.get_json()
    assert payload["error"] == "validation_failed"
    assert set(payload["fields"]) == bad_fields
    assert all(isinstance(msg, str) and msg for msg in payload["fields"].values())


def test_register_with_a_non_json_body_is_a_json_400(client):
    resp = client.post("/register", data="email=a@b.co", content_type="text/plain")

    assert resp.status_code == 400
    assert resp.get_json()["error"] == "bad_request"


def test_login_issues_a_token_other_services_accept(client, registered, secret):
    resp = client.post(
        "/login", json={"email": registered["email"], "password": registered["password"]}
    )

    assert resp.status_code == 200
    body = resp.get_json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 900
    claims = verify_access_token(body["access_token"], secret)
    assert claims["sub"] == str(registered["id"])
    assert claims["type"] == "access"
    assert claims["exp"] - claims["iat"] == 900


@pytest.mark.parametrize(
    "credentials",
    [
        {"email": "ada@example.com", "password": "wrong password"},
        {"email": "nobody@example.com", "password": "correct horse battery"},
    ],
    ids=["wrong-password", "unknown-email"],
)
def test_bad_credentials_get_one_indistinguishable_401(client, registered, credentials):
    resp = client.post("/login", json=credentials)

    assert resp.status_code == 401
    assert resp.get_json() == {"error": "unauthorized", "message": "invalid email or password"}


def test_login_without_password_is_422(client):
    resp = client.post("/login", json={"email": "ada@example.com"})

    assert resp.status_code == 422
    assert set(resp.get_json()["fields"]) == {"password"}


def test_me_returns_the_token_owner(client, registered, token):
    resp = client.get("/me", headers={"Authorization": f"Bearer {token}"})

    assert resp.status_code == 200
    assert resp.get_json() == {"id": registered["id"], "email": "ada@example.com", "name": "Ada"}


def _assert_json_401(resp):
    assert resp.status_code == 401
    assert resp.is_json, resp.data
    assert resp.get_json()["error"] == "unauthorized"
    assert resp.headers["WWW-Authenticate"] == "Bearer"


def test_me_without_token_is_401(client):
    _assert_json_401(client.get("/me"))


def test_me_with_a_token_signed_by_another_secret_is_401(client, registered):
    forged = jwt.encode(
        {"sub": str(registered["id"]), "type": "access", "exp": 4_000_000_000},
        "some-other-secret-that-is-long-enough",
        algorithm="HS256",
    )

    _assert_json_401(client.get("/me", headers={"Authorization": f"Bearer {forged}"}))


def test_me_with_an_expired_token_is_401(app, client, registered):
    with app.app_context():
        expired = create_access_token(str(registered["id"]), expires_delta=timedelta(seconds=-1))

    resp = client.get("/me", headers={"Authorization": f"Bearer {expired}"})

    _assert_json_401(resp)
    assert resp.get_json()["message"] == "token expired"


def test_me_with_garbage_token_is_401(client):
    _assert_json_401(client.get("/me", headers={"Authorization": "Bearer not.a.jwt"}))


def test_unknown_route_is_a_json_404(client):
    resp = client.get("/nope")

    assert resp.status_code == 404
    assert resp.get_json()["error"] == "not_found"


def test_health_reports_ok_then_503_when_the_db_breaks(client, settings):
    assert client.get("/health").get_json() == {"status": "ok", "service": "users", "db": "ok"}

    with sqlite3.connect(settings.data_dir / "users.db") as conn:
        conn.execute("DROP TABLE users")

    resp = client.get("/health")
    assert resp.status_code == 503
    assert resp.get_json()["status"] == "unavailable"


def test_metrics_count_requests_by_route(client, registered):
    client.get("/me")

    text = client.get("/metrics").get_data(as_text=True)

    counted = {
        (s.labels["endpoint"], s.labels["method"], s.labels["status"])
        for family in text_string_to_metric_families(text)
        if family.name == "shop_requests"
        for s in family.samples
        if s.name == "shop_requests_total" and s.labels["service"] == "users"
    }
    assert {("/register", "POST", "201"), ("/me", "GET", "401")} <= counted


def test_wrong_method_is_a_json_405_naming_the_allowed_ones(client):
    resp = client.get("/login")

    assert resp.status_code == 405
    assert resp.get_json()["error"] == "method_not_allowed"
    assert "POST" in resp.headers["Allow"]
