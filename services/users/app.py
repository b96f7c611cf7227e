"""The users HTTP API: accounts and access tokens.

    POST /register  {"email", "password", "name"?} -> 201 {"id", "email", "name"}
                    409 email taken; 422 {"error", "message", "fields": {field: message}}
    POST /login     {"email", "password"} -> 200 {"access_token", "token_type", "expires_in"}
                    401 for any bad credentials (one message, same cost)
    GET  /me        Authorization: Bearer <token> -> 200 {"id", "email", "name"}; 401
    GET  /health    200 {"status": "ok", "service": "users"} or 503 when the DB fails
    GET  /metrics   Prometheus exposition

Every error is a JSON object {"error": <code>, "message": <text>}; bad input of any kind
(invalid JSON, NaN, lone UTF-16 surrogates, deep nesting: shopkit.jsonbody) is a 400,
a body over 16 KiB a 413, never a 500. Access tokens are HS256 JWTs (sub = user id as a
string, type "access") signed with the per-project secret; /me checks them as every
other service does, with `shopkit.tokens` (through shopkit.flask_kit.token_required).
"""

from __future__ import annotations

import logging
import re
import sqlite3
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from flask import Flask, g, jsonify, request
from flask_jwt_extended import JWTManager, create_access_token
from passwords import PasswordHasher
from shopkit.flask_kit import harden, token_required, unauthorized
from shopkit.metrics import instrument_flask
from shopkit.settings import ServiceEnv, jwt_secret, load_settings
from shopkit.tokens import user_id
from store import EmailTaken, UserStore
from werkzeug.exceptions import HTTPException

SERVICE = "users"
DEFAULTS = {"access_token_ttl": "900"}  # seconds; env ACCESS_TOKEN_TTL or Consul KV
MIN_PASSWORD = 8
# Bounds the scrypt input and keeps the request small; no real password is longer.
MAX_PASSWORD = 1024
MAX_NAME = 200
# Deliberately loose: one "@", no spaces, a dot in the domain. Deliverability is
# only provable by sending mail, which this demo does not do.
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
MAX_EMAIL = 254  # RFC 5321 path limit
MAX_BODY = 16 * 1024  # the largest valid body is about 1.5 KB

log = logging.getLogger(SERVICE)


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    jwt_secret: str = field(repr=False)
    access_token_ttl: int = 900

    def __post_init__(self):
        # flask-jwt-extended treats a zero lifetime as "never expires": refuse it.
        if self.access_token_ttl <= 0:
            raise ValueError("access_token_ttl must be a positive number of seconds")

    @classmethod
    def from_service_env(cls, senv: ServiceEnv) -> Settings:
        values = load_settings(senv, DEFAULTS)
        return cls(
            data_dir=senv.data_dir,
            jwt_secret=jwt_secret(senv),
            access_token_ttl=int(values["access_token_ttl"]),
        )


def error(status: int, code: str, message: str, **extra):
    body = {"error": code, "message": message, **extra}
    return jsonify(body), status


def _json_object() -> dict | None:
    body = request.get_json(silent=True)
    return body if isinstance(body, dict) else None


def _registration_errors(body: dict) -> dict[str, str]:
    """Field -> message for every invalid field of a /register body."""
    errors = {}
    email, password, name = body.get("email"), body.get("password"), body.get("name")
    if not isinstance(email, str) or len(email) > MAX_EMAIL or not EMAIL_RE.match(email.strip()):
        errors["email"] = "must be a valid email address"
    if not isinstance(password, str) or len(password) < MIN_PASSWORD:
        errors["password"] = f"must be at least {MIN_PASSWORD} characters"
    elif len(password) > MAX_PASSWORD:
        errors["password"] = f"must be at most {MAX_PASSWORD} characters"
    if name is not None and (not isinstance(name, str) or len(name) > MAX_NAME):
        errors["name"] = f"must be a string of at most {MAX_NAME} characters"
    return errors


def _normalise_email(email: str) -> str:
    return email.strip().lower()


def create_app(settings: Settings, hasher: PasswordHasher | None = None) -> Flask:
    """The users WSGI app over SQLite in `settings.data_dir`.

    `hasher` lets tests use cheaper scrypt parameters; production uses the defaults.
    """
    app = Flask(SERVICE)
    app.config.update(
        JWT_SECRET_KEY=settings.jwt_secret,
        JWT_ALGORITHM="HS256",
        JWT_TOKEN_LOCATION=["headers"],
        JWT_ACCESS_TOKEN_EXPIRES=timedelta(seconds=settings.access_token_ttl),
    )
    harden(app, max_body=MAX_BODY)
    store = UserStore(settings.data_dir / "users.db")
    hasher = hasher or PasswordHasher()
    # flask-jwt-extended only issues tokens here; shopkit.tokens checks them.
    JWTManager(app)
    _install_error_handlers(app)
    instrument_flask(app, SERVICE)

    @app.post("/register")
    def register():
        body = _json_object()
        if body is None:
            return error(400, "bad_request", "body must be a JSON object")
        errors = _registration_errors(body)
        if errors:
            return error(422, "validation_failed", "invalid registration", fields=errors)
        try:
            user = store.add(
                _normalise_email(body["email"]), body.get("name"), hasher.hash(body["password"])
            )
        except EmailTaken:
            return error(409, "email_taken", "an account with this email already exists")
        log.info("user registered", extra={"user_id": user.id})
        return jsonify(user.public()), 201

    @app.post("/login")
    def login():
        body = _json_object()
        if body is None:
            return error(400, "bad_request", "body must be a JSON object")
        email, password = body.get("email"), body.get("password")
        fields = {k: "required" for k in ("email", "password") if not isinstance(body.get(k), str)}
        if fields:
            return error(422, "validation_failed", "invalid login", fields=fields)
        user = store.by_email(_normalise_email(email))
        # verify() runs scrypt even when user is None, so both failures cost the same.
        if not hasher.verify(password, user.password_hash if user else None):
            log.info("login failed")
            return unauthorized("invalid email or password")
        if hasher.needs_rehash(user.password_hash):
            store.set_password_hash(user.id, hasher.hash(password))
            log.info("password hash upgraded", extra={"user_id": user.id})
        token = create_access_token(identity=str(user.id))
        return jsonify(
            access_token=token, token_type="bearer", expires_in=settings.access_token_ttl
        )

    @app.get("/me")
    @token_required(settings.jwt_secret)
    def me():
        user = store.by_id(user_id(g.claims))
        if user is None:
            return unauthorized("account no longer exists")
        return jsonify(user.public())

    @app.get("/health")
    def health():
        try:
            store.ping()
        except sqlite3.Error as exc:
            log.warning("health check failed", extra={"error": str(exc)})
            return jsonify(status="unavailable", service=SERVICE, db="error"), 503
        return jsonify(status="ok", service=SERVICE, db="ok")

    return app


def _install_error_handlers(app: Flask) -> None:
    """JSON bodies for every error: Flask's defaults are HTML."""

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        code = (exc.name or "error").lower().replace(" ", "_")
        response, status = error(exc.code or 500, code, exc.description or exc.name)
        # Keep protocol headers such as Allow (405); the body is ours, so not its type.
        for key, value in exc.get_headers():
            if key.lower() != "content-type":
                response.headers[key] = value
        return response, status

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unhandled error")
        return error(500, "internal_error", "internal server error")
