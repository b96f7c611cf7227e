"""HTTP API of the payments service. Routes only translate between HTTP and payments.py.

Every route but /health and /metrics needs a service credential (shopkit.service_auth,
header X-Shop-Service-Token) for this service with the route's scope: `charge`,
`refund`, `get_charge`, or `admin` for /admin/*; else 401 {"detail"} (none, invalid,
expired) or 403 {"detail"} (another service's, another scope).

POST /charges {"order_id", "amount_cents" > 0, "currency" = "EUR"}   [Idempotency-Key]
    201 {"charge_id", "order_id", "amount_cents", "currency", "status": "SUCCEEDED"}
    200 the same body for a repeat of a settled order (the provider is not called)
    402 {..., "status": "DECLINED", "retryable": false}   (repeats too)
    409 {"status": "CONFLICT", "detail"}   other amount/currency, reused key, refunded order
    503 {"status": "UNAVAILABLE", "retryable": true, "breaker": "open"|"closed"|"half_open",
         "reason": "breaker_open"|"provider_error"|"provider_timeout"|"database_unavailable"}
        (database_unavailable: the database failed, a PostgreSQL restart say; nothing
        was charged that the next attempt will not find)
POST /refunds {"order_id"}   [Idempotency-Key]
    200 {"refund_id", "order_id", "amount_cents", "status": "REFUNDED"}, the first one on
        repeats; {"refund_id": null, ..., "amount_cents": 0, "status": "NOTHING_TO_REFUND"}
        for an order that was never charged; 409; 503 as above
GET /charges/{order_id}   200 {"order_id", "charge": {...} | null, "refund": {...} | null},
                          404 when the order has neither; 503 database_unavailable
GET /admin/faults, PUT /admin/faults {knob: value, ...}   the knobs in force (faults.py);
    PUT takes any subset and answers 422 for an unknown knob or invalid value
GET /admin/breaker   {"state", "fail_max", "reset_timeout_s", "failures"}
GET /health   200 {"status": "ok", "service", "database", "breaker"} | 503 when the database
    fails; database: "sqlite" (SHOP_DATA_DIR/payments.db) or "postgresql" (database_url)
GET /metrics  Prometheus (shopkit request and breaker metrics + breaker.py's counters)

Any request may also get 413 {"detail"} (body over 1 MiB), and any with a body a 422
{"detail": [...]} for malformed or non-strict JSON or invalid fields
(shopkit.fastapi_kit.harden): bad input never gets a 5xx. The OpenAPI document lists
every status of every route with its body schema; the models below are that schema.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Literal

from breaker import GuardedProvider, Unavailable
from config import Config
from db import open_database
from fastapi import FastAPI, Header, Request
from fastapi.responses import JSONResponse
from faults import MAX_LATENCY_MS, FaultStore, KnobError, KvWatcher
from ledger import ChargeStatus, Conflict, Ledger
from payments import Payments
from provider import SimulatedProvider
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat
from shopkit.fastapi_kit import (
    SERVICE_REFUSALS,
    ErrorDetail,
    harden,
    json_int,
    service_guard,
    validation_body,
)
from shopkit.metrics import instrument_fastapi
from shopkit.service_auth import ADMIN, Guard
from shopkit.settings import ServiceEnv, kv_prefix, read_kv

log = logging.getLogger(__name__)

IdempotencyKey = Annotated[str | None, Header(min_length=1, max_length=200)]
# The largest integer every JSON parser reads exactly (I-JSON, RFC 7493), well within
# the ledger's 64-bit column (SQLite INTEGER, PostgreSQL BIGINT): 90 trillion in major
# units.
MAX_AMOUNT_CENTS = 2**53 - 1
OrderId = Annotated[str, Field(min_length=1, max_length=128)]


class ChargeRequest(BaseModel):
    order_id: OrderId
    # json_int: 1450.0 is 1450 (JSON Schema's integer); "1450" and true are refused.
    amount_cents: json_int(gt=0, le=MAX_AMOUNT_CENTS)
    currency: str = Field(default="EUR", pattern=r"^[A-Z]{3}$")


class RefundRequest(BaseModel):
    order_id: OrderId


class KnobsUpdate(BaseModel):
    """Any subset of the fault knobs (faults.py); a knob left out or null keeps its value."""

    model_config = ConfigDict(extra="forbid")

    failure_rate: Annotated[StrictFloat, Field(ge=0, le=1, allow_inf_nan=False)] | None = None
    latency_ms: json_int(ge=0, le=MAX_LATENCY_MS) | None = None
    decline: StrictBool | None = None


# Response bodies, as documented in OpenAPI.
class Charge(BaseModel):
    charge_id: str
    order_id: str
    amount_cents: int
    currency: str
    status: Literal["PENDING", "FAILED", "SUCCEEDED", "DECLINED", "VOIDED"]


class Declined(Charge):
    status: Literal["DECLINED"]
    retryable: Literal[False]


class Refund(BaseModel):
    refund_id: str | None = Field(description="null for NOTHING_TO_REFUND")
    order_id: str
    amount_cents: int
    status: Literal["REFUNDED", "NOTHING_TO_REFUND"]


class Payment(BaseModel):
    order_id: str
    charge: Charge | None
    refund: Refund | None


class ConflictBody(BaseModel):
    status: Literal["CONFLICT"]
    detail: str


class UnavailableBody(BaseModel):
    status: Literal["UNAVAILABLE"]
    retryable: Literal[True]
    breaker: Literal["closed", "open", "half_open"]
    reason: Literal["breaker_open", "provider_error", "provider_timeout", "database_unavailable"]


class Knobs(BaseModel):
    failure_rate: float
    latency_ms: int
    decline: bool


class Breaker(BaseModel):
    state: Literal["closed", "open", "half_open"]
    fail_max: int
    reset_timeout_s: float
    failures: int


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    service: str
    database: Literal["sqlite", "postgresql"]
    breaker: Literal["closed", "open", "half_open"] | None = None


CONFLICT = {409: {"model": ConflictBody, "description": "Contradicts what the order has "
                  "(other amount or currency, reused key, refunded order)"}}
UNAVAILABLE = {503: {"model": UnavailableBody,
                     "description": "The provider or the database cannot be used now; "
                     "retry later"}}


def create_app(senv: ServiceEnv) -> FastAPI:
    """Build the service from its environment contract (settings: config.py)."""
    config = Config.load(senv)
    database = open_database(senv.data_dir, config.database_url)
    faults = FaultStore(config.knobs, seed=config.fault_seed)
    provider = SimulatedProvider(database, faults)
    guarded = GuardedProvider(provider, senv.service, fail_max=config.breaker_fail_max,
                              reset_timeout_s=config.breaker_reset_timeout_s,
                              timeout_s=config.provider_timeout_s)
    ledger = Ledger(database)
    payments = Payments(ledger, guarded)
    watcher = None
    if senv.consul_addr:
        prefix = kv_prefix(senv.project, senv.service)
        watcher = KvWatcher(faults, lambda: read_kv(senv.consul_addr, prefix),
                            interval_s=config.kv_poll_s)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if watcher is not None:
            watcher.start()
        try:
            yield
        finally:
            if watcher is not None:
                watcher.stop()
            guarded.close()
            provider.close()
            database.close()

    app = FastAPI(title="payments", lifespan=lifespan)
    harden(app)
    # The scopes are the saga actions' names in shop.yaml (payments.charge, .refund).
    require = service_guard(Guard(config.service_key, senv.service))
    # Tests count real provider charges through it.
    app.state.provider = provider
    instrument_fastapi(app, senv.service)

    @app.exception_handler(Conflict)
    async def _conflict(_: Request, exc: Conflict) -> JSONResponse:
        return JSONResponse({"status": "CONFLICT", "detail": str(exc)}, status_code=409)

    @app.exception_handler(Unavailable)
    async def _unavailable(_: Request, exc: Unavailable) -> JSONResponse:
        body = {"status": "UNAVAILABLE", "retryable": True, "breaker": exc.breaker,
                "reason": exc.reason}
        return JSONResponse(body, status_code=503)

    def _database_unavailable(_: Request, exc: Exception) -> JSONResponse:
        log.warning("database unavailable", extra={"error": str(exc)})
        body = {"status": "UNAVAILABLE", "retryable": True, "breaker": guarded.state(),
                "reason": "database_unavailable"}
        return JSONResponse(body, status_code=503)

    for error in database.errors:
        app.add_exception_handler(error, _database_unavailable)

    @app.post("/charges", status_code=201, response_model=Charge,
              dependencies=[require("charge")], responses={
        201: {"description": "Charged now"},
        200: {"model": Charge, "description": "Charged by an earlier request: that charge"},
        402: {"model": Declined, "description": "Declined by the provider (final)"},
        **SERVICE_REFUSALS, **CONFLICT, **UNAVAILABLE})
    def create_charge(req: ChargeRequest, idempotency_key: IdempotencyKey = None):
        charge, fresh = payments.charge(req.order_id, req.amount_cents, req.currency,
                                        idempotency_key)
        if charge.status is ChargeStatus.DECLINED:
            return JSONResponse({**charge.public(), "retryable": False}, status_code=402)
        return JSONResponse(charge.public(), status_code=201 if fresh else 200)

    @app.post("/refunds", response_model=Refund, dependencies=[require("refund")],
              responses={**SERVICE_REFUSALS, **CONFLICT, **UNAVAILABLE})
    def create_refund(req: RefundRequest, idempotency_key: IdempotencyKey = None):
        return payments.refund(req.order_id, idempotency_key).public()

    @app.get("/charges/{order_id}", response_model=Payment,
             dependencies=[require("get_charge")], responses={
        **SERVICE_REFUSALS, **UNAVAILABLE,
        404: {"model": ErrorDetail, "description": "The order has no charge and no refund"}})
    def get_charge(order_id: str):
        charge, refund = ledger.charge(order_id), ledger.refund(order_id)
        if charge is None and refund is None:
            return JSONResponse({"detail": f"no payment for order {order_id}"}, status_code=404)
        return {
            "order_id": order_id,
            "charge": charge.public() if charge else None,
            "refund": refund.public() if refund else None,
        }

    admin = {"dependencies": [require(ADMIN)], "responses": SERVICE_REFUSALS}

    @app.get("/admin/faults", response_model=Knobs, **admin)
    def get_faults():
        return faults.current().as_dict()

    @app.put("/admin/faults", response_model=Knobs, **admin)
    def put_faults(changes: KnobsUpdate):
        try:
            return faults.update(changes.model_dump(exclude_none=True), source="admin").as_dict()
        except KnobError as exc:  # the model admits only valid knobs; kept as a safety net
            error = {"type": "value_error", "loc": ["body"], "msg": str(exc)}
            return JSONResponse(validation_body([error]), status_code=422)

    @app.get("/admin/breaker", response_model=Breaker, **admin)
    def get_breaker():
        return {"state": guarded.state(), "fail_max": guarded.fail_max,
                "reset_timeout_s": guarded.reset_timeout_s, "failures": guarded.failures}

    @app.get("/health", response_model=Health, responses={
        503: {"model": Health, "description": "The database fails"}})
    def health():
        try:
            ledger.ping()
        except database.errors as exc:
            log.warning("health check failed", extra={"error": str(exc)})
            return JSONResponse({"status": "unavailable", "service": senv.service,
                                 "database": database.kind}, status_code=503)
        return {"status": "ok", "service": senv.service, "database": database.kind,
                "breaker": guarded.state()}

    return app
