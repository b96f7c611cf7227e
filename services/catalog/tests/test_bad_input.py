"""Issue 13, against main.py as a real process: every malformed request gets a 4xx
with a small body, never a 500; integers as JSON Schema counts them; tokens checked
as by every service."""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import httpx
import jwt
import pytest
from shopkit.testing import post_json_bytes, running_service

SERVICE_DIR = Path(__file__).resolve().parents[1]
TEN_MIB_OF_JSON = b" " * (10 * 1024 * 1024) + b"{}"


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    secret = secrets.token_urlsafe(32)
    with running_service(tmp_path_factory.mktemp("catalog"), SERVICE_DIR,
                         SHOP_JWT_SECRET=secret) as service:
        service.secret = secret
        yield service
        assert "Traceback" not in service.logs()


def token(catalog, **claims) -> str:
    now = int(time.time())
    payload = {"sub": "1", "type": "access", "iat": now, "exp": now + 300, **claims}
    return jwt.encode({k: v for k, v in payload.items() if v is not None}, catalog.secret,
                      "HS256")


def post(catalog, path: str, raw: bytes, content_type: str = "application/json",
         scheme: str = "Bearer", **claims) -> httpx.Response:
    headers = {"Content-Type": content_type,
               "Authorization": f"{scheme} {token(catalog, **claims)}"}
    return httpx.post(f"{catalog.url}{path}", content=raw, headers=headers, timeout=30)


def assert_small_422(response: httpx.Response) -> None:
    assert response.status_code == 422, response.text
    assert isinstance(response.json()["detail"], list)
    assert len(response.content) < 8000


@pytest.mark.parametrize(("path", "raw"), [
    ("/quotes", b'{"items": [{"sku": "SKU-MUG-001", "qty": NaN}]}'),
    ("/quotes", b'{"items": [{"sku": "SKU-MUG-001", "qty": Infinity}], "x": -Infinity}'),
    ("/products", b'{"sku": "SKU-BAD-002", "name": "n", "price_cents": NaN}'),
], ids=["nan-qty", "infinity", "nan-price"])
def test_nan_or_infinity_in_a_failing_body_is_a_422(catalog, path, raw):
    assert_small_422(post(catalog, path, raw))


@pytest.mark.parametrize(("path", "raw"), [
    ("/quotes", b'{"items": [{"sku": "\\ud800", "qty": "a"}]}'),
    ("/quotes", b'{"items": [{"sku": "\\ud800", "qty": 1}]}'),
    ("/quotes", b'{"items": [{"sku": "SKU-MUG-001", "qty": 1, "\\udc00": 1}]}'),
    ("/products", b'{"sku": "SKU-BAD-003", "name": "\\udbff", "price_cents": 100}'),
], ids=["failing-body", "valid-body", "in-a-key", "product-name"])
def test_a_lone_surrogate_in_any_string_is_a_422(catalog, path, raw):
    assert_small_422(post(catalog, path, raw))


def test_bytes_that_are_not_utf8_are_a_422_json_or_not(catalog):
    assert_small_422(post(catalog, "/quotes", b'{"items": "\xff"}'))
    assert_small_422(post(catalog, "/quotes", b"\xff\xfe", content_type="text/plain"))


def test_a_422_echoes_no_unbounded_input(catalog):
    response = post(catalog, "/quotes", b'{"items": [{"sku": "' + b"s" * 900_000 + b'"}]}')

    assert_small_422(response)


@pytest.mark.parametrize("chunked", [False, True], ids=["sized", "chunked"])
def test_a_body_over_one_mib_is_a_413(catalog, chunked):
    response = post_json_bytes(f"{catalog.url}/quotes", TEN_MIB_OF_JSON, chunked)

    assert response.status_code == 413
    assert response.json() == {"detail": "request body larger than 1048576 bytes"}


def test_whole_numbers_written_with_a_fraction_are_integers(catalog):
    quote = post(catalog, "/quotes", b'{"items": [{"sku": "SKU-MUG-001", "qty": 2.0}]}')
    created = post(catalog, "/products",
                   b'{"sku": "SKU-BAD-004", "name": "n", "price_cents": 916.0}')

    assert quote.status_code == 200 and quote.json()["items"][0]["qty"] == 2
    assert created.status_code == 201 and created.json()["price_cents"] == 916


@pytest.mark.parametrize(("scheme", "claims", "status"), [
    ("bearer", {}, 201),
    ("Bearer", {"type": None}, 401),
    ("Bearer", {"type": "id"}, 401),
    ("Bearer", {"sub": "\u0661"}, 401),
    ("Bearer", {"sub": "99999999999999999999"}, 401),
], ids=["lower-case-scheme", "no-type", "id-token", "arabic-digit-sub", "20-digit-sub"])
def test_tokens_are_checked_as_by_every_service(catalog, scheme, claims, status):
    # Only the first case creates the product; refused tokens create nothing.
    body = b'{"sku": "SKU-TOK-001", "name": "n", "price_cents": 1}'

    response = post(catalog, "/products", body, scheme=scheme, **claims)

    assert response.status_code == status, response.text


def test_openapi_documents_every_status_the_routes_answer(catalog):
    paths = httpx.get(f"{catalog.url}/openapi.json").json()["paths"]

    def statuses(path: str, method: str) -> set[str]:
        return set(paths[path][method]["responses"])

    assert {"201", "401", "409", "413", "422"} <= statuses("/products", "post")
    assert {"200", "404", "413", "422"} <= statuses("/quotes", "post")
    assert {"200", "404"} <= statuses("/products/{sku}", "get")
    assert {"200", "503"} <= statuses("/health", "get")
