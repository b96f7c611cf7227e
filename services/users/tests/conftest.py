"""Fixtures of the users tests: an app on a temp data dir, and main.py as a subprocess."""

from __future__ import annotations

import secrets
import sys
from pathlib import Path

import pytest
from shopkit.testing import load_own_modules, service_starter

SERVICE_DIR = Path(__file__).resolve().parents[1]
# Other services have modules with these names too (app.py, store.py, ...), and a
# whole-repo pytest run imports every service's tests into one interpreter, where
# `import app` can mean only one file. So ours are imported once, here, and put back
# into sys.modules before each test module of this folder is imported.
OWN_MODULE_NAMES = ("app", "store", "passwords")

OWN_MODULES = load_own_modules(SERVICE_DIR, OWN_MODULE_NAMES)


def pytest_pycollect_makemodule(module_path, parent):
    """Runs before pytest imports a test module of this folder: make it see our modules."""
    sys.modules.update(OWN_MODULES)


from app import Settings, create_app  # noqa: E402
from passwords import PasswordHasher, ScryptParams  # noqa: E402

# Cheap parameters keep the suite fast; the format and the code path are the same.
FAST_PARAMS = ScryptParams(n=2**10, r=8, p=1)
PASSWORD = "correct horse battery"


@pytest.fixture
def secret() -> str:
    return secrets.token_urlsafe(32)


@pytest.fixture
def settings(tmp_path, secret) -> Settings:
    return Settings(data_dir=tmp_path / "data", jwt_secret=secret, access_token_ttl=900)


@pytest.fixture
def app(settings):
    return create_app(settings, hasher=PasswordHasher(FAST_PARAMS))


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def registered(client) -> dict:
    """A registered account: its public fields plus the password used."""
    resp = client.post(
        "/register", json={"email": "ada@example.com", "password": PASSWORD, "name": "Ada"}
    )
    assert resp.status_code == 201, resp.get_json()
    return {**resp.get_json(), "password": PASSWORD}


@pytest.fixture
def token(client, registered) -> str:
    resp = client.post("/login", json={"email": registered["email"], "password": PASSWORD})
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()["access_token"]


@pytest.fixture
def start_service(tmp_path):
    """Factory: start_service(service_dir, **env) -> a healthy ServiceProcess."""
    yield from service_starter(tmp_path, SERVICE_DIR)
