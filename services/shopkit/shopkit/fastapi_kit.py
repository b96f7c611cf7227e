"""What every FastAPI service of the shop shares so that bad input gets a 4xx with a
small body, never a 5xx, and so that its OpenAPI says what it answers.

    app = FastAPI(title=...)
    harden(app)                   # before the first route; see harden()
    claims = bearer_auth(secret)  # Depends(claims) on routes that need a user
    require = service_guard(Guard(key, service))   # shopkit.service_auth
    @app.post("/charges", dependencies=[require("charge")], responses=SERVICE_REFUSALS)

Imported by FastAPI services only (it needs fastapi and pydantic; the kit itself does
not).
"""

# No `from __future__ import annotations`: FastAPI reads the dependency's annotations.
import math
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, BeforeValidator, Field

from shopkit import jsonbody
from shopkit.bodylimit import DEFAULT_MAX_BODY, BodyLimit
from shopkit.service_auth import HEADER, Guard, Refused
from shopkit.tokens import InvalidToken, MissingToken, access_claims

# A 422 lists at most this many errors, and echoes no input longer than MAX_ECHO
# characters: a bad 1 MiB body gets a small answer.
MAX_ERRORS = 20
MAX_ECHO = 100


class ErrorDetail(BaseModel):
    """FastAPI's error body: what went wrong, in words."""

    detail: str


class ValidationIssue(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ValidationFailed(BaseModel):
    """FastAPI's 422 body (HTTPValidationError), for `responses=` of a route whose 422
    may also have another shape."""

    detail: list[ValidationIssue]


TOO_LARGE = {413: {"model": ErrorDetail, "description": "Request body over the size limit"}}
UNAUTHORIZED = {401: {"model": ErrorDetail,
                      "description": "Missing, invalid or expired access token"}}
SERVICE_REFUSALS = {
    401: {"model": ErrorDetail,
          "description": "Missing, invalid or expired service credential"},
    403: {"model": ErrorDetail,
          "description": "A service credential for another service, or without the scope"},
}


def _whole_number(value: Any) -> Any:
    # JSON Schema's "integer" is any number without a fraction, 916.0 included.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def json_int(**limits: int) -> Any:
    """An integer field as JSON Schema means it: 916 and 916.0 pass; 916.5, "916" and
    true do not (pydantic's lax int would take "916" and true, its strict int not
    916.0). `limits` are Field's ge, gt, le, lt; applied before the conversion so that
    the JSON schema shows them as minimum/maximum. Use: `qty: json_int(ge=1)`."""
    return Annotated[int, Field(strict=True, **limits), BeforeValidator(_whole_number)]


class _StrictJsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = jsonbody.loads(await self.body())
        return self._json


class StrictJsonRoute(APIRoute):
    """Routes whose JSON bodies are parsed by shopkit.jsonbody: NaN, lone surrogates,
    deep nesting and non-UTF-8 bytes become FastAPI's 422 json_invalid (non-UTF-8 bytes
    would otherwise be an undocumented 400)."""

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def strict_json(request: Request):
            return await handler(_StrictJsonRequest(request.scope, request.receive))

        return strict_json


def _text(value: str) -> str:
    """A string safe to put in a JSON response: UTF-8-encodable and short."""
    value = value.encode("utf-8", "replace").decode("utf-8")
    return value if len(value) <= MAX_ECHO else value[:MAX_ECHO] + "..."


def _scalar(value: Any) -> Any:
    """A JSON-safe scalar for an error field; None when there is no good one."""
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, bytes):
        return _text(value.decode("utf-8", "replace"))
    if isinstance(value, str):
        return _text(value)
    return None


def _error(raw: dict) -> dict:
    """One validation error with FastAPI's documented keys, safe to serialise: text
    cut to MAX_ECHO, no lone surrogates, no NaN, no echo of whole objects."""
    error = {
        "type": _text(str(raw.get("type", "value_error"))),
        "loc": [part if isinstance(part, int) and not isinstance(part, bool)
                else _text(str(part)) for part in raw.get("loc", ())],
        "msg": _text(str(raw.get("msg", ""))),
    }
    if "input" in raw and not isinstance(raw["input"], dict | list | tuple):
        echoed = _scalar(raw["input"])
        if echoed is not None or raw["input"] is None:
            error["input"] = echoed
    ctx = raw.get("ctx")
    if isinstance(ctx, dict):
        error["ctx"] = {_text(str(key)): _scalar(value) if _scalar(value) is not None
                        else _text(str(value)) for key, value in ctx.items()}
    return error


def validation_body(errors: list) -> dict:
    """The 422 body (FastAPI's HTTPValidationError) for a list of pydantic errors."""
    return {"detail": [_error(raw) for raw in errors[:MAX_ERRORS] if isinstance(raw, dict)]}


async def _validation_failed(request: Request, exc: RequestValidationError) -> JSONResponse:
    return JSONResponse(validation_body(list(exc.errors())), status_code=422)


def harden(app: FastAPI, max_body: int = DEFAULT_MAX_BODY) -> None:
    """Make `app` answer every malformed request with a 4xx: strict JSON bodies (422),
    a body size limit (413), 422 bodies that always serialise and stay small. Call it
    before adding routes: their class and the documented 413 are set when they are
    added."""
    if any(isinstance(route, APIRoute) for route in app.routes):
        raise RuntimeError("harden(app) must come before the app's first route")
    app.router.route_class = StrictJsonRoute
    app.router.responses = {**TOO_LARGE, **(app.router.responses or {})}
    app.add_middleware(BodyLimit, max_bytes=max_body)
    app.add_exception_handler(RequestValidationError, _validation_failed)


_bearer = HTTPBearer(auto_error=False, description="An access token from the users service")


def bearer_auth(secret: str) -> Callable[..., dict]:
    """A dependency: the verified claims of the request's bearer token (shopkit.tokens),
    else 401 {"detail"} with a Bearer challenge. Routes using it show the bearer
    security scheme in OpenAPI; add UNAUTHORIZED to their `responses`."""

    def access_token_claims(
        request: Request,
        _documented: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> dict:
        try:
            return access_claims(request.headers.get("Authorization"), secret)
        except MissingToken as exc:
            raise HTTPException(401, str(exc), {"WWW-Authenticate": "Bearer"}) from None
        except InvalidToken as exc:
            # RFC 6750: say why when a token was sent but refused.
            raise HTTPException(401, str(exc),
                                {"WWW-Authenticate": 'Bearer error="invalid_token"'}) from None

    return access_token_claims


class _ServiceCredential(APIKeyHeader):
    """The route dependency of service_guard: the ServiceCredential API-key scheme in
    OpenAPI, and the check itself (one dependency, async: the check is some 20 µs of
    CPU, cheaper on the event loop than FastAPI's thread pool hop for a plain def)."""

    def __init__(self, guard: Guard, scope: str):
        super().__init__(
            name=HEADER, auto_error=False, scheme_name="ServiceCredential",
            description="A service credential (shopkit.service_auth): for the shop's "
                        "services and shopctl, e.g. from `shopctl token SERVICE -s SCOPE`")
        self._guard = guard
        self._scope = scope

    async def __call__(self, request: Request) -> dict:
        try:
            return self._guard.check(request.headers.get(HEADER), self._scope)
        except Refused as exc:
            raise HTTPException(exc.status, str(exc)) from None


def service_guard(guard: Guard) -> Callable[[str], Any]:
    """require(scope) -> a route dependency (`dependencies=[require("charge")]`) that lets
    the request through only with a service credential granting `scope` here: else 401
    (missing, invalid, expired) or 403 (another service's, another scope), {"detail"}.
    Routes using it show the ServiceCredential security scheme in OpenAPI; add
    SERVICE_REFUSALS to their `responses`."""

    def require(scope: str) -> Any:
        return Depends(_ServiceCredential(guard, scope))

    return require
