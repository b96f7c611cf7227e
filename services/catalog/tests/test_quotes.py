"""POST /quotes: items priced at the stored prices, public, refused when unknown or malformed."""

from __future__ import annotations

import pytest
from shopkit.seed import PRODUCTS

PRICE = {p.sku: p.price_cents for p in PRODUCTS}


def test_quote_prices_each_line_and_totals_them_without_a_token(client):
    resp = client.post("/quotes", json={"items": [{"sku": "SKU-TEE-002", "qty": 1},
                                                  {"sku": "SKU-MUG-001", "qty": 3}]})

    assert resp.status_code == 200
    assert resp.json() == {
        "items": [
            {"sku": "SKU-TEE-002", "qty": 1, "unit_price_cents": PRICE["SKU-TEE-002"]},
            {"sku": "SKU-MUG-001", "qty": 3, "unit_price_cents": PRICE["SKU-MUG-001"]},
        ],
        "total_cents": PRICE["SKU-TEE-002"] + 3 * PRICE["SKU-MUG-001"],
    }


def test_quote_uses_the_store_so_a_new_product_is_priced(client, auth):
    new = {"sku": "SKU-HAT-900", "name": "Wool hat", "price_cents": 2990}
    assert client.post("/products", json=new, headers=auth).status_code == 201

    resp = client.post("/quotes", json={"items": [{"sku": "SKU-HAT-900", "qty": 2}]})

    assert resp.status_code == 200
    assert resp.json()["total_cents"] == 5980


def test_unknown_sku_is_404_naming_it(client):
    resp = client.post("/quotes", json={"items": [{"sku": "SKU-MUG-001", "qty": 1},
                                                  {"sku": "SKU-XYZ-999", "qty": 1}]})

    assert resp.status_code == 404
    assert resp.json() == {"detail": "no product SKU-XYZ-999"}


def test_no_items_is_422(client):
    resp = client.post("/quotes", json={"items": []})

    assert resp.status_code == 422
    assert resp.json()["detail"][0]["loc"] == ["body", "items"]


def test_a_sku_twice_is_422(client):
    resp = client.post("/quotes", json={"items": [{"sku": "SKU-MUG-001", "qty": 1},
                                                  {"sku": "SKU-MUG-001", "qty": 2}]})

    assert resp.status_code == 422
    assert "SKU-MUG-001 appears more than once" in resp.json()["detail"][0]["msg"]


@pytest.mark.parametrize("body", [
    {},
    {"items": [{"sku": "SKU-MUG-001"}]},
    {"items": [{"sku": "SKU-MUG-001", "qty": 0}]},
    {"items": [{"sku": "SKU-MUG-001", "qty": "2"}]},
    {"items": [{"sku": "SKU-MUG-001", "qty": True}]},
    {"items": [{"sku": "", "qty": 1}]},
    {"items": [{"sku": "SKU-MUG-001", "qty": 1, "price_cents": 1}]},
])
def test_malformed_bodies_are_422(client, body):
    assert client.post("/quotes", json=body).status_code == 422
