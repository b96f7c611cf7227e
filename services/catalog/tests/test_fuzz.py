"""main.py as a real process, fuzzed against its own OpenAPI document with schemathesis
(issue 13): positive and negative cases for every operation, no 5xx, every status, header
and body as documented, schema-valid requests accepted and invalid ones refused."""

from __future__ import annotations

import secrets
import time

import jwt
from shopkit.testing import fuzz_openapi


def _distinct_skus(case) -> bool:
    """A quote names each SKU once: a rule JSON Schema cannot state for a key of the list's
    objects, so schema-valid quotes that break it are not sent as valid ones."""
    body = case.body
    if case.operation.path != "/quotes" or not isinstance(body, dict):
        return True
    skus = [item.get("sku") for item in body.get("items") or [] if isinstance(item, dict)]
    return len(skus) == len(set(skus))


def test_the_running_catalog_answers_as_its_openapi_says(start_service):
    secret = secrets.token_urlsafe(32)
    catalog = start_service(SHOP_JWT_SECRET=secret)
    now = int(time.time())
    token = jwt.encode({"sub": "1", "type": "access", "iat": now, "exp": now + 600}, secret,
                       "HS256")

    report = fuzz_openapi(catalog.url, max_examples=100, fits=_distinct_skus,
                          headers={"Authorization": f"Bearer {token}"})

    print(report)
    assert report.failures == {}, str(report)
    assert report.examples >= 400, str(report)
    assert catalog.terminate() == 0, catalog.logs()
    assert "Traceback" not in catalog.logs()
