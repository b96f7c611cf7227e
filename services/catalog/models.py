"""The catalog's API models (request and response bodies, OpenAPI schemas)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

SKU_PATTERN = r"^SKU-[A-Z]{3}-[0-9]{3}$"
# A sanity bound (one million in major units) that also keeps the value in SQLite's
# 64-bit INTEGER range.
MAX_PRICE_CENTS = 100_000_000


class Product(BaseModel):
    """A product as created and as listed. `sku` is its id everywhere in the shop."""

    model_config = ConfigDict(extra="forbid")

    sku: Annotated[str, Field(pattern=SKU_PATTERN, examples=["SKU-MUG-001"])]
    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
    # strict: JSON true or "1450" must not silently become a price.
    price_cents: Annotated[int, Field(strict=True, gt=0, le=MAX_PRICE_CENTS)]
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$", description="ISO 4217 code")] = "EUR"


class QuoteItem(BaseModel):
    """One line of a quote request: a SKU and how many of it."""

    model_config = ConfigDict(extra="forbid")

    sku: Annotated[str, Field(min_length=1, examples=["SKU-MUG-001"])]
    # strict: JSON true or "2" must not silently become a quantity.
    qty: Annotated[int, Field(strict=True, ge=1)]


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


class ErrorDetail(BaseModel):
    detail: str


class Health(BaseModel):
    status: str
    service: str
    products: int | None = None
