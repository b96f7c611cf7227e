"""SQLite store of products (SHOP_DATA_DIR/catalog.db), keyed by SKU.

Each public method opens its own connection and runs in one transaction, so the store
is safe to call from FastAPI's worker threads.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable

from models import Product
from shopkit.seed import SeedProduct
from shopkit.sqlite import SqliteStore

SCHEMA = """
CREATE TABLE IF NOT EXISTS products (
    sku         TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    price_cents INTEGER NOT NULL CHECK (price_cents > 0),
    currency    TEXT NOT NULL,
    created_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
)
"""
COLUMNS = "sku, name, price_cents, currency"


class SkuExists(Exception):
    """A product with this SKU already exists."""


def _product(row: sqlite3.Row) -> Product:
    return Product.model_validate(dict(row))


class CatalogStore(SqliteStore):
    schema = SCHEMA

    def seed(self, products: Iterable[SeedProduct], currency: str = "EUR") -> int:
        """Insert the products whose SKU is not stored yet; the number inserted.

        Safe on every start: existing rows (maybe edited since) are left alone.
        """
        with self._transaction() as conn:
            before = conn.total_changes
            conn.executemany(
                f"INSERT OR IGNORE INTO products ({COLUMNS}) VALUES (?, ?, ?, ?)",
                [(p.sku, p.name, p.price_cents, currency) for p in products],
            )
            return conn.total_changes - before

    def add(self, product: Product) -> Product:
        """Store a new product; SkuExists if the SKU is taken."""
        try:
            with self._transaction() as conn:
                conn.execute(
                    f"INSERT INTO products ({COLUMNS}) VALUES (?, ?, ?, ?)",
                    (product.sku, product.name, product.price_cents, product.currency),
                )
        except sqlite3.IntegrityError as exc:
            raise SkuExists(product.sku) from exc
        return product

    def get(self, sku: str) -> Product | None:
        with self._transaction() as conn:
            row = conn.execute(f"SELECT {COLUMNS} FROM products WHERE sku = ?", (sku,)).fetchone()
        return _product(row) if row else None

    def get_many(self, skus: Iterable[str]) -> dict[str, Product]:
        """{sku: Product} of those of `skus` that exist, read in one transaction (so one
        consistent set of prices); unknown SKUs are simply absent."""
        found: dict[str, Product] = {}
        with self._transaction() as conn:
            # One query a SKU: no bound on how many (an IN list meets SQLite's limit on
            # bound parameters), and a quote has a handful.
            for sku in dict.fromkeys(skus):
                row = conn.execute(
                    f"SELECT {COLUMNS} FROM products WHERE sku = ?", (sku,)
                ).fetchone()
                if row is not None:
                    found[sku] = _product(row)
        return found

    def all(self) -> list[Product]:
        with self._transaction() as conn:
            rows = conn.execute(f"SELECT {COLUMNS} FROM products ORDER BY sku").fetchall()
        return [_product(row) for row in rows]

    def count(self) -> int:
        """Number of products; raises sqlite3.Error when the database is unusable."""
        with self._transaction() as conn:
            return conn.execute("SELECT count(*) FROM products").fetchone()[0]
