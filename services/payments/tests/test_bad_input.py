"""Issue 13, against main.py as a real process: every malformed request gets a 4xx
with a small body, never a 500; /admin/faults' 422 has its documented shape;
integers as JSON Schema counts them. Requests carry a valid service credential, so
that the body itself is what is judged."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from shopkit.testing import post_json_bytes, running_service

SERVICE_DIR = Path(__file__).resolve().parents[1]
TEN_MIB_OF_JSON = b" " * (10 * 1024 * 1024) + b"{}"


@pytest.fixture(scope="module")
def payments(tmp_path_factory, service_key, module_store, credential):
    with running_service(tmp_path_factory.mktemp("payments"), SERVICE_DIR,
                         SHOP_SERVICE_KEY=service_key, **module_store) as service:
        service.credential = credential
        yield service
        assert "Traceback" not in service.logs()


def send(payments, method: str, path: str, raw: bytes,
         content_type: str = "application/json") -> httpx.Response:
    if method == "POST":
        return post_json_bytes(f"{payments.url}{path}", raw, content_type=content_type,
                               headers=payments.credential())
    return httpx.put(f"{payments.url}{path}", content=raw, timeout=30,
                     headers={"Content-Type": content_type, **payments.credential()})


def knobs(payments) -> dict:
    return httpx.get(f"{payments.url}/admin/faults", headers=payments.credential()).json()


def assert_validation_422(response: httpx.Response) -> None:
    """A 422 in FastAPI's documented shape (HTTPValidationError), and small."""
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, list) and detail
    assert all({"loc", "msg", "type"} <= set(error) for error in detail)
    assert len(response.content) < 8000


@pytest.mark.parametrize(("method", "path", "raw"), [
    ("POST", "/charges", b'{"order_id": "x", "amount_cents": NaN}'),
    ("POST", "/charges", b'{"order_id": "x", "amount_cents": 1, "currency": Infinity}'),
    ("PUT", "/admin/faults", b'{"failure_rate": NaN}'),
], ids=["nan", "infinity", "nan-knob"])
def test_nan_or_infinity_is_a_422(payments, method, path, raw):
    assert_validation_422(send(payments, method, path, raw))


@pytest.mark.parametrize(("path", "raw"), [
    ("/charges", b'{"order_id": "\\ud800", "amount_cents": "a"}'),
    ("/charges", b'{"order_id": "\\ud800", "amount_cents": 1}'),
    ("/refunds", b'{"order_id": "\\udfff"}'),
], ids=["failing-body", "valid-charge", "valid-refund"])
def test_a_lone_surrogate_in_any_string_is_a_422(payments, path, raw):
    assert_validation_422(send(payments, "POST", path, raw))


def test_bytes_that_are_not_utf8_are_a_422_json_or_not(payments):
    assert_validation_422(send(payments, "POST", "/charges", b'{"order_id": "\xff"}'))
    assert_validation_422(send(payments, "POST", "/charges", b"\xff", content_type="text/plain"))
    assert_validation_422(send(payments, "PUT", "/admin/faults", b"\xff"))


def test_an_amount_beyond_the_ledger_is_a_422(payments):
    raw = b'{"order_id": "huge", "amount_cents": 1' + b"0" * 30 + b"}"

    assert_validation_422(send(payments, "POST", "/charges", raw))


def test_a_422_echoes_no_unbounded_input(payments):
    raw = b'{"order_id": "' + b"o" * 1_000_000 + b'", "amount_cents": 1}'

    assert_validation_422(send(payments, "POST", "/charges", raw))


@pytest.mark.parametrize("chunked", [False, True], ids=["sized", "chunked"])
def test_a_body_over_one_mib_is_a_413(payments, chunked):
    response = post_json_bytes(f"{payments.url}/charges", TEN_MIB_OF_JSON, chunked)

    assert response.status_code == 413
    assert response.json() == {"detail": "request body larger than 1048576 bytes"}


@pytest.mark.parametrize("raw", [
    b'{"bogus": 1}', b'{"failure_rate": 2}', b'{"latency_ms": 2.5}', b'{"decline": "yes"}',
    b'{"failure_rate": "0.5"}', b"[1]",
], ids=["unknown-knob", "rate-too-high", "fractional-latency", "string-flag",
        "string-rate", "not-an-object"])
def test_admin_faults_422_has_the_documented_shape(payments, raw):
    before = knobs(payments)

    assert_validation_422(send(payments, "PUT", "/admin/faults", raw))
    assert knobs(payments) == before


def test_whole_numbers_written_with_a_fraction_are_integers(payments):
    charge = send(payments, "POST", "/charges", b'{"order_id": "frac", "amount_cents": 916.0}')
    knobs = send(payments, "PUT", "/admin/faults", b'{"latency_ms": 0.0}')

    assert charge.status_code == 201 and charge.json()["amount_cents"] == 916
    assert knobs.status_code == 200 and knobs.json()["latency_ms"] == 0


def test_openapi_documents_every_status_the_routes_answer(payments):
    paths = httpx.get(f"{payments.url}/openapi.json").json()["paths"]

    def statuses(path: str, method: str) -> set[str]:
        return set(paths[path][method]["responses"])

    assert {"200", "201", "402", "409", "413", "422", "503"} <= statuses("/charges", "post")
    assert {"200", "409", "413", "422", "503"} <= statuses("/refunds", "post")
    assert {"200", "404"} <= statuses("/charges/{order_id}", "get")
    assert {"200", "422"} <= statuses("/admin/faults", "put")
    assert {"200", "503"} <= statuses("/health", "get")
