"""main.py as a real process: serves over HTTP, stops cleanly on SIGTERM."""

from __future__ import annotations

import secrets

import httpx


def test_main_serves_health_and_the_api_then_exits_cleanly_on_sigterm(start_service):
    service = start_service(SHOP_JWT_SECRET=secrets.token_urlsafe(32))

    health = httpx.get(f"{service.url}/health")
    me = httpx.get(f"{service.url}/me")
    metrics = httpx.get(f"{service.url}/metrics")

    assert health.json() == {"status": "ok", "service": "users", "db": "ok"}
    assert me.status_code == 401 and me.json()["error"] == "unauthorized"
    assert 'endpoint="/health",method="GET",service="users"' in metrics.text
    assert service.terminate() == 0, service.logs()
    assert '"msg": "stopped"' in service.logs()


def test_data_survives_a_restart(start_service):
    secret = secrets.token_urlsafe(32)
    account = {"email": "keep@example.com", "password": "long enough"}
    first = start_service(SHOP_JWT_SECRET=secret)
    assert httpx.post(f"{first.url}/register", json=account).status_code == 201
    assert first.terminate() == 0

    second = start_service(SHOP_JWT_SECRET=secret, SHOP_DATA_DIR=str(first.data_dir))

    assert httpx.post(f"{second.url}/login", json=account).status_code == 200
