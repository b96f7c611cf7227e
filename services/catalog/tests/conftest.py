"""Fixtures of the catalog tests: an app on a temp data dir, tokens, and services run
as real subprocesses (main.py)."""

from __future__ import annotations

import secrets
import sys
import time
from pathlib import Path

import jwt
import pytest
from fastapi.testclient import TestClient
from shopkit.testing import load_own_modules, service_starter

SERVICE_DIR = Path(__file__).resolve().parents[1]
# Other services have modules with these names too (app.py, store.py, ...), and a
# whole-repo pytest run imports every service's tests into one interpreter, where
# `import app` can mean only one file. So ours are imported once, here, and put back
# into sys.modules before each test module of this folder is imported.
OWN_MODULE_NAMES = ("app", "store", "models")

OWN_MODULES = load_own_modules(SERVICE_DIR, OWN_MODULE_NAMES)


def pytest_pycollect_makemodule(module_path, parent):
    """Runs before pytest imports a test module of this folder: make it see our modules."""
    sys.modules.update(OWN_MODULES)


from app import create_app  # noqa: E402


@pytest.fixture
def secret() -> str:
    return secrets.token_urlsafe(32)


@pytest.fixture
def data_dir(tmp_path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def app(data_dir, secret):
    return create_app(data_dir, secret)


@pytest.fixture
def client(app):
    return TestClient(app)


@pytest.fixture
def make_token(secret):
    """make_token(ttl=300, secret=<the app's>, **claims): an access token shaped like
    the ones users issues (HS256; sub, type, iat, exp)."""

    def make(ttl: int = 300, secret: str = secret, **claims) -> str:
        now = int(time.time())
        payload = {"sub": "1", "type": "access", "iat": now, "exp": now + ttl, **claims}
        return jwt.encode(payload, secret, algorithm="HS256")

    return make


@pytest.fixture
def auth(make_token) -> dict[str, str]:
    """Headers with a valid access token."""
    return {"Authorization": f"Bearer {make_token()}"}


@pytest.fixture
def start_service(tmp_path):
    """Factory: start_service(service_dir, **env) -> a healthy ServiceProcess."""
    yield from service_starter(tmp_path, SERVICE_DIR)
