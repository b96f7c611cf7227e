"""users and catalog as real processes sharing one per-test secret: a token users
issues is accepted by catalog, and one signed with another secret is not."""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import httpx
import jwt

USERS_DIR = Path(__file__).resolve().parents[2] / "users"
PRODUCT = {"sku": "SKU-KIT-777", "name": "Repair kit", "price_cents": 999}


def test_a_users_token_lets_a_client_create_a_product(start_service):
    secret = secrets.token_urlsafe(32)
    users = start_service(USERS_DIR, SHOP_JWT_SECRET=secret)
    catalog = start_service(SHOP_JWT_SECRET=secret)
    account = {"email": "buyer@example.com", "password": "long enough", "name": "Buyer"}

    with httpx.Client(timeout=10.0) as http:
        registered = http.post(f"{users.url}/register", json=account)
        login = http.post(f"{users.url}/login", json=account)
        token = login.json()["access_token"]
        created = http.post(
            f"{catalog.url}/products",
            json=PRODUCT,
            headers={"Authorization": f"Bearer {token}"},
        )
        forged = jwt.encode(
            {"sub": str(registered.json()["id"]), "type": "access", "exp": int(time.time()) + 300},
            secrets.token_urlsafe(32),
            algorithm="HS256",
        )
        refused = http.post(
            f"{catalog.url}/products",
            json={**PRODUCT, "sku": "SKU-KIT-778"},
            headers={"Authorization": f"Bearer {forged}"},
        )
        listed = {p["sku"] for p in http.get(f"{catalog.url}/products").json()}

    assert registered.status_code == 201
    assert login.status_code == 200
    assert created.status_code == 201, created.text
    assert refused.status_code == 401
    assert refused.headers["WWW-Authenticate"].startswith("Bearer")
    assert "SKU-KIT-777" in listed and "SKU-KIT-778" not in listed
    assert users.terminate() == 0, users.logs()
    assert catalog.terminate() == 0, catalog.logs()
