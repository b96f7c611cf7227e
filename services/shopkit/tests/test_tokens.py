"""shopkit.tokens: the one token check of every HTTP service."""

from __future__ import annotations

import time

import jwt
import pytest
from shopkit.tokens import (
    InvalidToken,
    MissingToken,
    access_claims,
    bearer_token,
    user_id,
    verify_access_token,
)

SECRET = "a-test-secret-long-enough-for-hs256-keys"


def token(secret: str = SECRET, **claims) -> str:
    now = int(time.time())
    payload = {"sub": "7", "type": "access", "iat": now, "exp": now + 300, **claims}
    return jwt.encode({k: v for k, v in payload.items() if v is not None}, secret, "HS256")


def test_a_plain_access_token_passes():
    claims = verify_access_token(token(), SECRET)

    assert claims["sub"] == "7" and user_id(claims) == 7


@pytest.mark.parametrize(("claims", "message"), [
    ({"exp": None}, "invalid token"),
    ({"type": None}, "invalid token"),
    ({"sub": None}, "invalid token"),
    ({"type": "id"}, "not an access token"),
    ({"type": "refresh"}, "not an access token"),
    ({"exp": int(time.time()) - 10}, "token expired"),
    ({"sub": "99999999999999999999"}, "invalid token subject"),
    ({"sub": "\u00b2"}, "invalid token subject"),
    ({"sub": "\u0661"}, "invalid token subject"),
    ({"sub": "01"}, "invalid token subject"),
    ({"sub": "0"}, "invalid token subject"),
    ({"sub": "-1"}, "invalid token subject"),
    ({"sub": "1\n"}, "invalid token subject"),
    ({"sub": " 1"}, "invalid token subject"),
    ({"sub": ""}, "invalid token subject"),
], ids=lambda value: repr(value))
def test_tokens_that_are_not_plain_access_tokens_are_refused(claims, message):
    with pytest.raises(InvalidToken, match=f"^{message}$"):
        verify_access_token(token(**claims), SECRET)


def test_the_largest_subject_fits_a_64_bit_integer():
    claims = verify_access_token(token(sub="9" * 18), SECRET)

    assert user_id(claims) < 2**63


def test_a_signed_but_absurd_expiry_is_refused_not_raised():
    forged = jwt.encode({"sub": "1", "type": "access"}, SECRET, "HS256")
    header, _, _ = forged.split(".")
    # exp as 1e999 (a JSON number Python reads as inf) needs hand-made JSON.
    body = jwt.utils.base64url_encode(b'{"sub":"1","type":"access","exp":1e999}').decode()
    signing_input = f"{header}.{body}".encode()
    signature = jwt.utils.base64url_encode(
        jwt.algorithms.HMACAlgorithm(jwt.algorithms.HMACAlgorithm.SHA256).sign(
            signing_input, SECRET.encode())).decode()

    with pytest.raises(InvalidToken):
        verify_access_token(f"{header}.{body}.{signature}", SECRET)


def test_other_secrets_and_garbage_are_refused():
    for bad in (token(secret="another-secret-long-enough-for-hs256-keys"), "not.a.jwt",
                "x" * 10_000):
        with pytest.raises(InvalidToken):
            verify_access_token(bad, SECRET)


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
def test_the_scheme_is_case_insensitive(scheme):
    assert bearer_token(f"{scheme} abc") == "abc"
    assert access_claims(f"{scheme} {token()}", SECRET)["sub"] == "7"


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer   ", "Basic dTpw", "Token abc"])
def test_no_bearer_token_is_a_missing_token(header):
    with pytest.raises(MissingToken, match="missing bearer token"):
        access_claims(header, SECRET)
