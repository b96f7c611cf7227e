"""The catalog HTTP API: the shop's products, keyed by SKU.

    GET  /products         200 [Product]
    GET  /products/{sku}   200 Product | 404 {"detail"}
    POST /products         Authorization: Bearer <users access token>, body Product
                           201 Product (+ Location) | 401 | 409 SKU exists | 422 invalid
    POST /quotes           body {"items": [{"sku", "qty" >= 1}, ...]} (at least one item,
                           a SKU at most once); no token, prices are public
                           200 {"items": [{"sku", "qty", "unit_price_cents"}], "total_cents"}
                           at the stored prices | 404 {"detail": "no product SKU"} | 422
    GET  /health           200 {"status": "ok", "service": "catalog", "products": n} | 503
    GET  /metrics          Prometheus exposition
    GET  /openapi.json, /docs

Any request may also get 413 {"detail"} (body over 1 MiB), and any with a body 422
for JSON that is malformed or not strict (shopkit.fastapi_kit.harden): bad input never
gets a 5xx. The OpenAPI document lists every status of every route with its body.

Tokens are checked locally with the per-project secret (`shopkit.tokens`); catalog
never calls users. Products from `shopkit.seed.PRODUCTS` are inserted on start.
"""

# No `from __future__ import annotations` here: FastAPI must evaluate the route
# annotations, and they name `access_claims`, a closure over the app's secret.
import logging
import sqlite3
from pathlib import Path
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Response, status
from fastapi.responses import JSONResponse
from models import Health, Product, Quote, QuoteLine, QuoteRequest
from shopkit.fastapi_kit import UNAUTHORIZED, ErrorDetail, bearer_auth, harden
from shopkit.metrics import instrument_fastapi
from shopkit.seed import PRODUCTS
from store import CatalogStore, SkuExists

SERVICE = "catalog"

log = logging.getLogger(SERVICE)

def create_app(data_dir: Path, jwt_secret: str) -> FastAPI:
    """The catalog ASGI app over SQLite in `data_dir`, seeded on creation."""
    store = CatalogStore(data_dir / "catalog.db")
    inserted = store.seed(PRODUCTS)
    if inserted:
        log.info("catalog seeded", extra={"inserted": inserted})

    access_claims = bearer_auth(jwt_secret)

    app = FastAPI(title="catalog", summary="The demo shop's products", version="1.0.0")
    harden(app)
    instrument_fastapi(app, SERVICE)

    @app.get("/products")
    def list_products() -> list[Product]:
        return store.all()

    @app.get(
        "/products/{sku}",
        responses={404: {"model": ErrorDetail, "description": "No such SKU"}},
    )
    def get_product(sku: str) -> Product:
        product = store.get(sku)
        if product is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no product {sku}")
        return product

    @app.post(
        "/products",
        status_code=status.HTTP_201_CREATED,
        responses={
            **UNAUTHORIZED,
            409: {"model": ErrorDetail, "description": "SKU already exists"},
        },
    )
    def create_product(
        product: Product,
        response: Response,
        claims: Annotated[dict, Depends(access_claims)],
    ) -> Product:
        try:
            created = store.add(product)
        except SkuExists as exc:
            raise HTTPException(
                status.HTTP_409_CONFLICT, detail=f"product {product.sku} already exists"
            ) from exc
        log.info("product created", extra={"sku": created.sku, "user_id": claims["sub"]})
        response.headers["Location"] = f"/products/{created.sku}"
        return created

    @app.post(
        "/quotes",
        responses={404: {"model": ErrorDetail, "description": "An item's SKU is unknown"}},
    )
    def quote(request: QuoteRequest) -> Quote:
        """Price the items at today's prices, read in one transaction. Public, like the
        prices themselves; a quote is not stored and holds nothing."""
        products = store.get_many(item.sku for item in request.items)
        lines = []
        for item in request.items:
            product = products.get(item.sku)
            if product is None:
                raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no product {item.sku}")
            lines.append(
                QuoteLine(sku=item.sku, qty=item.qty, unit_price_cents=product.price_cents)
            )
        return Quote(items=lines, total_cents=sum(line.qty * line.unit_price_cents
                                                  for line in lines))

    @app.get("/health", response_model=Health, responses={503: {"model": Health}})
    def health():
        try:
            count = store.count()
        except sqlite3.Error as exc:
            log.warning("health check failed", extra={"error": str(exc)})
            return JSONResponse(
                {"status": "unavailable", "service": SERVICE}, status.HTTP_503_SERVICE_UNAVAILABLE
            )
        return Health(status="ok", service=SERVICE, products=count)

    return app
