"""The catalog's API models (request and response bodies, OpenAPI schemas)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator
from shopkit.fastapi_kit import json_int

SKU_PATTERN = r"^SKU-[A-Z]{3}-[0-9]{3}$"
# A sanity bound (one million in major units) that also keeps the value in SQLite's
# 64-bit INTEGER range.
MAX_PRICE_CENTS = 100_000_000
# SKUs are 11 characters (SKU_PATTERN); a quote's SKU is only checked against the store,
# and echoed in its 404, so it gets a bound too.
MAX_SKU = 64


class Product(BaseModel):
    """A product as created and as listed. `sku` is its id everywhere in the shop."""

    model_config = ConfigDict(extra="forbid")

    sku: Annotated[str, Field(pattern=SKU_PATTERN, examples=["SKU-MUG-001"])]
    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
    # json_int: JSON true or "1450" must not silently become a price; 1450.0 is 1450.
    price_cents: json_int(gt=0, le=MAX_PRICE_CENTS)
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$", description="ISO 4217 code")] = "EUR"


class QuoteItem(BaseModel):
    """One line of a quote request: a SKU and how many of it."""

    model_config = ConfigDict(extra="forbid")

    sku: Annotated[str, Field(min_length=1, max_length=MAX_SKU, examples=["SKU-MUG-001"])]
    # json_int: JSON true or "2" must not silently become a quantity; 2.0 is 2.
    qty: json_int(ge=1)


class QuoteRequest(BaseModel):
    """What to price: at least one item, each SKU at most once."""

    model_config = ConfigDict(extra="forbid")

    items: Annotated[list[QuoteItem], Field(min_length=1)]

    @field_validator("items")
    @classmethod
    def _one_line_a_sku(cls, items: list[QuoteItem]) -> list[QuoteItem]:
        seen: set[str] = set()
        for item in items:
            if item.sku in seen:
                raise ValueError(f"SKU {item.sku} appears more than once; give its total qty")
            seen.add(item.sku)
        return items


class QuoteLine(BaseModel):
    sku: str
    qty: int
    unit_price_cents: int


class Quote(BaseModel):
    """The items at today's prices, in the order asked, and what they come to."""

    items: list[QuoteLine]
    total_cents: int


class Health(BaseModel):
    status: str
    service: str
    products: int | None = None
