"""shopkit.service_auth: the credential every call between services carries."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import jwt
import pytest
from shopkit.service_auth import (
    ADMIN,
    HEADER,
    METADATA_KEY,
    Caller,
    Guard,
    PermissionDenied,
    Unauthenticated,
    mint,
    verify,
)
from shopkit.testing import DENIED, UNAUTHENTICATED, credential_probes

KEY = "a-test-service-key-long-enough-for-hs256-keys"


def test_a_fresh_credential_passes_with_its_claims():
    claims = verify(mint(KEY, "shopctl", "payments", "charge"), KEY, "payments", "charge")

    assert claims["type"] == "service"
    assert (claims["iss"], claims["aud"], claims["scope"]) == ("shopctl", "payments",
                                                               ["charge"])
    assert claims["exp"] - claims["iat"] == 60
    assert len(claims["jti"]) == 32


def test_a_credential_may_grant_several_scopes():
    token = mint(KEY, "tests", "payments", ["charge", "refund", ADMIN])

    for scope in ("charge", "refund", ADMIN):
        assert verify(token, KEY, "payments", scope)["scope"] == ["charge", "refund", ADMIN]


def test_every_credential_is_different():
    assert mint(KEY, "a", "b", "c") != mint(KEY, "a", "b", "c")


@pytest.mark.parametrize("probe", list(credential_probes(KEY, "payments", "charge")))
def test_forged_stolen_and_misdirected_credentials_are_refused(probe):
    token, expected = credential_probes(KEY, "payments", "charge")[probe]

    with pytest.raises(Unauthenticated if expected == UNAUTHENTICATED else PermissionDenied):
        verify(token, KEY, "payments", "charge")


def test_admin_is_a_scope_like_any_other():
    probes = credential_probes(KEY, "payments", ADMIN)

    assert probes["another scope"][1] == DENIED
    with pytest.raises(PermissionDenied):
        verify(probes["another scope"][0], KEY, "payments", ADMIN)
    with pytest.raises(PermissionDenied, match="without scope 'admin'"):
        verify(mint(KEY, "x", "payments", "charge"), KEY, "payments", ADMIN)


def test_refusals_say_why_and_map_to_401_or_403():
    with pytest.raises(Unauthenticated, match="missing") as missing:
        verify(None, KEY, "payments", "charge")
    with pytest.raises(Unauthenticated, match="expired"):
        verify(mint(KEY, "x", "payments", "charge", 10, now=time.time() - 60), KEY,
               "payments", "charge")
    with pytest.raises(PermissionDenied, match="not payments") as denied:
        verify(mint(KEY, "x", "orders", "charge"), KEY, "payments", "charge")

    assert (missing.value.status, missing.value.grpc_code) == (401, "UNAUTHENTICATED")
    assert (denied.value.status, denied.value.grpc_code) == (403, "PERMISSION_DENIED")


FUTURE, IN_A_MINUTE_AS_TEXT = "<now + 600>", "<now + 60, as text>"


@pytest.mark.parametrize("claims", [
    {"type": "access"},
    {"scope": "charge"},           # a string, not a list
    {"scope": [1]},
    {"iss": ""},
    {"aud": ["payments"]},         # a list of audiences is not "the callee"
    {"iat": FUTURE},               # issued 600 s from now
    {"exp": 1e999},
    {"exp": True},
    {"exp": IN_A_MINUTE_AS_TEXT},
    {"iat": None},
    {"scope": None},
])
def test_odd_claims_are_refused(claims):
    now = int(time.time())  # times are made here: the parameters exist from collection on
    times = {FUTURE: now + 600, IN_A_MINUTE_AS_TEXT: str(now + 60)}
    claims = {name: times.get(value, value) if isinstance(value, str) else value
              for name, value in claims.items()}
    payload = {"type": "service", "iss": "x", "aud": "payments", "scope": ["charge"],
               "iat": now, "exp": now + 60, **claims}

    with pytest.raises((Unauthenticated, PermissionDenied)):
        verify(jwt.encode(payload, KEY, "HS256"), KEY, "payments", "charge")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _signed(header: bytes, payload: bytes, key: str = KEY) -> str:
    signing = f"{_b64(header)}.{_b64(payload)}"
    mac = hmac.new(key.encode(), signing.encode(), hashlib.sha256).digest()
    return f"{signing}.{_b64(mac)}"


def _payload(**claims) -> bytes:
    now = int(time.time())
    return json.dumps({"type": "service", "iss": "x", "aud": "payments", "scope": ["charge"],
                       "iat": now, "exp": now + 60, **claims}).encode()


HS256 = b'{"alg":"HS256","typ":"JWT"}'


@pytest.mark.parametrize("token", [
    _signed(HS256, _payload()) + ".",                                    # four segments
    _signed(HS256, _payload()).replace(".", "=.", 1),                    # padding
    _signed(b'{"alg":"HS512","typ":"JWT"}', _payload()),                 # another algorithm
    _signed(b'{"alg":"none"}', _payload()),
    _signed(b'{"alg":"HS256","crit":["exp"]}', _payload()),              # unknown extension
    _signed(b"[1]", _payload()),
    _signed(HS256, b'{"type": "service", "exp": NaN}'),
    _signed(HS256, b"[]"),
    _signed(HS256, b"\xff"),
    _signed(HS256, b"[" * 5000 + b"]" * 5000),
    _signed(HS256, _payload(), key="another-key-long-enough-for-hs256-keys!"),
    "\u00e9." + _signed(HS256, _payload()).split(".", 1)[1],
], ids=["4-segments", "padding", "hs512", "alg-none", "crit", "header-list", "nan",
        "claims-list", "not-utf8", "deep", "other-key", "non-ascii"])
def test_malformed_or_foreign_tokens_are_unauthenticated(token):
    with pytest.raises(Unauthenticated):
        verify(token, KEY, "payments", "charge")


def test_a_hand_made_hs256_token_with_the_right_claims_passes():
    assert verify(_signed(HS256, _payload()), KEY, "payments", "charge")["iss"] == "x"


def test_a_few_seconds_of_clock_skew_are_tolerated():
    token = mint(KEY, "x", "payments", "charge", 60, now=time.time() - 62)

    assert verify(token, KEY, "payments", "charge")


def test_an_over_long_token_is_refused_before_decoding():
    with pytest.raises(Unauthenticated):
        verify("a" * 5000, KEY, "payments", "charge")


def test_guard_and_caller_need_a_key():
    for make in (lambda: Guard("", "payments"), lambda: Caller(None, "orders")):
        with pytest.raises(RuntimeError, match="SHOP_SERVICE_KEY"):
            make()


def test_caller_shapes_match_what_guards_read():
    caller, guard = Caller(KEY, "orders"), Guard(KEY, "payments")

    (name, token), = caller.metadata("payments", "charge")

    assert name == METADATA_KEY
    assert guard.check(token, "charge")["iss"] == "orders"
    assert guard.check(caller.headers("payments", "charge")[HEADER], "charge")
