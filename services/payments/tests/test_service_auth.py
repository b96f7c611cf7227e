"""Issue 13, against main.py as a real process: charges, refunds, payment records and
the admin knobs need a service credential for payments with the route's scope
(shopkit.service_auth); every forged, expired, misdirected or user token is refused
and changes nothing; health, metrics and the OpenAPI document stay open."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest
from shopkit.service_auth import ADMIN, HEADER
from shopkit.testing import UNAUTHENTICATED, credential_probes, running_service

SERVICE_DIR = Path(__file__).resolve().parents[1]
STATUS = {UNAUTHENTICATED: 401}  # else 403
# (method, path, body, scope): every route a credential guards.
GUARDED = [
    ("POST", "/charges", {"order_id": "o-auth", "amount_cents": 100}, "charge"),
    ("POST", "/refunds", {"order_id": "o-auth"}, "refund"),
    ("GET", "/charges/o-auth", None, "get_charge"),
    ("GET", "/admin/faults", None, ADMIN),
    ("PUT", "/admin/faults", {"failure_rate": 1}, ADMIN),
    ("GET", "/admin/breaker", None, ADMIN),
]


@pytest.fixture(scope="module")
def payments(tmp_path_factory, service_key, module_store):
    with running_service(tmp_path_factory.mktemp("payments"), SERVICE_DIR,
                         SHOP_SERVICE_KEY=service_key, **module_store) as service:
        yield service
        assert "Traceback" not in service.logs()


def call(payments, method: str, path: str, body, headers: dict) -> httpx.Response:
    return httpx.request(method, f"{payments.url}{path}", json=body, headers=headers,
                         timeout=10)


@pytest.mark.parametrize(("method", "path", "body", "scope"), GUARDED,
                         ids=[f"{m} {p}" for m, p, _, _ in GUARDED])
def test_every_bad_credential_is_refused_and_changes_nothing(payments, service_key,
                                                             credential, method, path,
                                                             body, scope):
    probes = credential_probes(service_key, "payments", scope)

    answers = {name: call(payments, method, path, body,
                          {HEADER: token} if token else {}).status_code
               for name, (token, _) in probes.items()}
    # A user's access token where users send it is no service credential either.
    user_token = probes["a user's access token"][0]
    as_bearer = call(payments, method, path, body, {"Authorization": f"Bearer {user_token}"})

    assert answers == {name: STATUS.get(expected, 403)
                       for name, (_, expected) in probes.items()}
    assert as_bearer.status_code == 401
    record = call(payments, "GET", "/charges/o-auth", None, credential("get_charge"))
    assert record.status_code == 404  # no charge, and no refund that would block one
    assert call(payments, "GET", "/admin/faults", None, credential(ADMIN)).json()[
        "failure_rate"] == 0.0


def test_the_right_credential_is_accepted_and_only_for_its_scope(payments, credential):
    order = f"o-{uuid.uuid4().hex[:8]}"

    charged = call(payments, "POST", "/charges", {"order_id": order, "amount_cents": 700},
                   credential("charge"))
    refund_with_charge_scope = call(payments, "POST", "/refunds", {"order_id": order},
                                    credential("charge"))
    knobs_with_charge_scope = call(payments, "PUT", "/admin/faults", {"latency_ms": 5},
                                   credential("charge"))
    refunded = call(payments, "POST", "/refunds", {"order_id": order}, credential("refund"))
    record = call(payments, "GET", f"/charges/{order}", None, credential("get_charge"))
    knobs = call(payments, "PUT", "/admin/faults", {"latency_ms": 0}, credential(ADMIN))

    assert charged.status_code == 201, charged.text
    assert (refund_with_charge_scope.status_code, knobs_with_charge_scope.status_code) == (
        403, 403)
    assert refunded.json()["status"] == "REFUNDED"
    assert record.json()["refund"]["amount_cents"] == 700
    assert knobs.status_code == 200


def test_refusals_say_why(payments, service_key):
    refused = call(payments, "POST", "/charges", {"order_id": "o", "amount_cents": 1}, {})
    expired, _ = credential_probes(service_key, "payments", "charge")["expired"]
    late = call(payments, "POST", "/charges", {"order_id": "o", "amount_cents": 1},
                {HEADER: expired})

    assert refused.json() == {"detail": "missing service credential"}
    assert late.json() == {"detail": "service credential expired"}


def test_health_metrics_and_the_openapi_document_stay_open(payments):
    for path in ("/health", "/metrics", "/openapi.json"):
        assert httpx.get(f"{payments.url}{path}", timeout=5).status_code == 200, path


def test_openapi_documents_the_credential_and_its_refusals(payments):
    document = httpx.get(f"{payments.url}/openapi.json", timeout=5).json()
    scheme = document["components"]["securitySchemes"]["ServiceCredential"]

    assert (scheme["type"], scheme["in"], scheme["name"]) == ("apiKey", "header", HEADER)
    for method, path, _, _ in GUARDED:
        template = path.replace("o-auth", "{order_id}") if path.startswith("/charges/") \
            else path
        operation = document["paths"][template][method.lower()]
        assert operation["security"] == [{"ServiceCredential": []}], path
        assert {"401", "403"} <= set(operation["responses"]), path
    assert "security" not in document["paths"]["/health"]["get"]
