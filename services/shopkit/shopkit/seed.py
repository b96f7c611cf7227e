"""The demo shop's products. catalog and inventory both seed from this list, so a
stock-keeping unit (SKU) means the same thing in both services."""

from __future__ import annotations

from typing import NamedTuple


class SeedProduct(NamedTuple):
    sku: str
    name: str
    price_cents: int
    initial_stock: int


PRODUCTS: tuple[SeedProduct, ...] = (
    SeedProduct("SKU-MUG-001", "Enamel camp mug", 1450, 120),
    SeedProduct("SKU-TEE-002", "Organic cotton tee", 2400, 80),
    SeedProduct("SKU-CAP-003", "Canvas cap", 1900, 60),
    SeedProduct("SKU-BAG-004", "Waxed tote bag", 5200, 25),
    SeedProduct("SKU-PEN-005", "Brass pen", 3100, 10),
)
