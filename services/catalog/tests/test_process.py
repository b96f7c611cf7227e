"""main.py as a real process: serves over HTTP, stops cleanly on SIGTERM."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import httpx
from shopkit.seed import PRODUCTS

SERVICE_DIR = Path(__file__).resolve().parents[1]


def test_main_serves_health_and_products_then_exits_cleanly_on_sigterm(start_service):
    service = start_service(SHOP_JWT_SECRET=secrets.token_urlsafe(32))

    health = httpx.get(f"{service.url}/health")
    products = httpx.get(f"{service.url}/products")
    unauthenticated = httpx.post(f"{service.url}/products", json={})

    assert health.json() == {"status": "ok", "service": "catalog", "products": len(PRODUCTS)}
    assert len(products.json()) == len(PRODUCTS)
    assert unauthenticated.status_code == 401
    assert service.terminate() == 0, service.logs()
    assert '"msg": "stopped"' in service.logs()


def test_main_without_a_token_secret_refuses_to_start(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("SHOP_JWT_SECRET", "CONSUL_HTTP_ADDR")}
    env.update(SHOP_PORT="1", SHOP_DATA_DIR=str(tmp_path))

    result = subprocess.run(
        [sys.executable, "main.py"],
        cwd=SERVICE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode != 0
    assert "SHOP_JWT_SECRET" in result.stderr
