"""Settings resolution: environment contract, token lifetime, the shared secret."""

from __future__ import annotations

import pytest
from app import Settings, create_app
from passwords import PasswordHasher, ScryptParams
from shopkit.settings import ServiceEnv


def _senv(tmp_path, **env: str) -> ServiceEnv:
    return ServiceEnv.from_environ("users", 8001, environ={"SHOP_DATA_DIR": str(tmp_path), **env})


def test_token_lifetime_comes_from_access_token_ttl(tmp_path):
    settings = Settings.from_service_env(
        _senv(tmp_path, SHOP_JWT_SECRET="x" * 32, ACCESS_TOKEN_TTL="60")
    )
    client = create_app(settings, hasher=PasswordHasher(ScryptParams(n=2**10))).test_client()
    client.post("/register", json={"email": "t@example.com", "password": "long enough"})

    resp = client.post("/login", json={"email": "t@example.com", "password": "long enough"})

    assert resp.get_json()["expires_in"] == 60


def test_default_token_lifetime_is_15_minutes(tmp_path):
    settings = Settings.from_service_env(_senv(tmp_path, SHOP_JWT_SECRET="x" * 32))

    assert settings.access_token_ttl == 900


def test_missing_secret_stops_startup(tmp_path):
    with pytest.raises(RuntimeError, match="SHOP_JWT_SECRET"):
        Settings.from_service_env(_senv(tmp_path))


@pytest.mark.parametrize("ttl", [0, -5])
def test_non_positive_token_lifetime_is_refused(tmp_path, ttl):
    with pytest.raises(ValueError):
        Settings(data_dir=tmp_path, jwt_secret="x" * 32, access_token_ttl=ttl)
