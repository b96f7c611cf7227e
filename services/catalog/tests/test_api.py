"""Behaviour of the catalog API through FastAPI's TestClient."""

from __future__ import annotations

import sqlite3

import pytest
from app import create_app
from fastapi.testclient import TestClient
from shopkit.seed import PRODUCTS

NEW = {"sku": "SKU-HAT-900", "name": "Wool hat", "price_cents": 2990}


def test_list_returns_the_seeded_products(client):
    resp = client.get("/products")

    assert resp.status_code == 200
    assert resp.json() == [
        {"sku": p.sku, "name": p.name, "price_cents": p.price_cents, "currency": "EUR"}
        for p in sorted(PRODUCTS, key=lambda p: p.sku)
    ]


def test_get_one_product_by_sku(client):
    resp = client.get("/products/SKU-MUG-001")

    assert resp.status_code == 200
    assert resp.json()["name"] == "Enamel camp mug"


def test_unknown_sku_is_404_with_detail(client):
    resp = client.get("/products/SKU-XYZ-999")

    assert resp.status_code == 404
    assert resp.json() == {"detail": "no product SKU-XYZ-999"}


def test_create_with_a_valid_token(client, auth):
    resp = client.post("/products", json=NEW, headers=auth)

    assert resp.status_code == 201
    assert resp.json() == {**NEW, "currency": "EUR"}
    assert resp.headers["Location"] == "/products/SKU-HAT-900"
    assert client.get("/products/SKU-HAT-900").json() == {**NEW, "currency": "EUR"}


def test_create_keeps_an_explicit_currency(client, auth):
    resp = client.post("/products", json={**NEW, "currency": "USD"}, headers=auth)

    assert resp.status_code == 201
    assert client.get("/products/SKU-HAT-900").json()["currency"] == "USD"


def test_existing_sku_is_409_and_the_product_is_unchanged(client, auth):
    resp = client.post(
        "/products", json={**NEW, "sku": "SKU-MUG-001", "price_cents": 1}, headers=auth
    )

    assert resp.status_code == 409
    assert "SKU-MUG-001" in resp.json()["detail"]
    assert client.get("/products/SKU-MUG-001").json()["price_cents"] == 1450


def test_create_without_token_is_401_with_a_bearer_challenge(client):
    resp = client.post("/products", json=NEW)

    assert resp.status_code == 401
    assert resp.headers["WWW-Authenticate"] == "Bearer"
    assert resp.json() == {"detail": "missing bearer token"}
    assert client.get("/products/SKU-HAT-900").status_code == 404


@pytest.mark.parametrize(
    ("token_kwargs", "detail"),
    [
        ({"secret": "a-different-secret-of-plenty-length"}, "invalid token"),
        ({"ttl": -10}, "token expired"),
        ({"type": "refresh"}, "not an access token"),
    ],
    ids=["other-secret", "expired", "refresh-token"],
)
def test_create_with_a_refused_token_is_401(client, make_token, token_kwargs, detail):
    headers = {"Authorization": f"Bearer {make_token(**token_kwargs)}"}

    resp = client.post("/products", json=NEW, headers=headers)

    assert resp.status_code == 401
    assert resp.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    assert resp.json() == {"detail": detail}


def test_non_bearer_authorization_is_401(client):
    resp = client.post("/products", json=NEW, headers={"Authorization": "Basic dTpw"})

    assert resp.status_code == 401


@pytest.mark.parametrize(
    "change",
    [
        {"sku": "sku-hat-900"},
        {"sku": "SKU-HAT-90"},
        {"sku": "HAT-900"},
        {"name": ""},
        {"name": "   "},
        {"price_cents": 0},
        {"price_cents": -100},
        {"price_cents": 12.5},
        {"price_cents": "2990"},
        {"price_cents": True},
        {"currency": "eur"},
        {"currency": "EURO"},
        {"colour": "red"},
    ],
)
def test_invalid_bodies_are_422(client, auth, change):
    resp = client.post("/products", json={**NEW, **change}, headers=auth)

    assert resp.status_code == 422
    assert resp.json()["detail"], "pydantic should say which field is wrong"


def test_missing_fields_are_422(client, auth):
    resp = client.post("/products", json={"sku": "SKU-HAT-900"}, headers=auth)

    assert resp.status_code == 422
    missing = {tuple(err["loc"]) for err in resp.json()["detail"]}
    assert {("body", "name"), ("body", "price_cents")} <= missing


def test_seeding_is_idempotent_and_keeps_created_products(data_dir, secret, client, auth):
    client.post("/products", json=NEW, headers=auth)

    restarted = TestClient(create_app(data_dir, secret))
    skus = [p["sku"] for p in restarted.get("/products").json()]

    assert len(skus) == len(set(skus)) == len(PRODUCTS) + 1
    assert "SKU-HAT-900" in skus


def test_openapi_documents_the_api(client):
    spec = client.get("/openapi.json").json()

    assert {"/products", "/products/{sku}", "/health"} <= set(spec["paths"])
    assert "HTTPBearer" in spec["components"]["securitySchemes"]
    assert client.get("/docs").status_code == 200


def test_health_reports_ok_then_503_when_the_db_breaks(client, data_dir):
    assert client.get("/health").json() == {
        "status": "ok",
        "service": "catalog",
        "products": len(PRODUCTS),
    }

    with sqlite3.connect(data_dir / "catalog.db") as conn:
        conn.execute("DROP TABLE products")

    resp = client.get("/health")
    assert resp.status_code == 503
    assert resp.json()["status"] == "unavailable"


def test_metrics_count_requests_by_route_template(client):
    client.get("/products/SKU-MUG-001")

    text = client.get("/metrics").text

    assert 'endpoint="/products/{sku}",method="GET",service="catalog",status="200"' in text
