"""The one access-token check of every HTTP service (users included).

users issues tokens with flask-jwt-extended (HS256, claims sub/exp/type/jti); every
service verifies them here, with the same per-project secret, and never calls users to
do so. A token passes only when:

- the Authorization header says `Bearer <token>` (the scheme in any case, RFC 7235);
- it is an HS256 JWT signed with the secret, not expired, with `exp`, `sub` and `type`;
- `type` is "access" (not a refresh or an id token);
- `sub` is a user id written in ASCII digits, without a leading zero, at most 18 of
  them: int(sub) then always fits SQLite's 64-bit INTEGER, and "²", "١" or "0x1" are
  refused rather than read as numbers.
"""

from __future__ import annotations

import re

import jwt

# Far above any token users issues (about 300 characters); a longer header is refused
# before any decoding work.
MAX_TOKEN_LENGTH = 4096
SUBJECT = re.compile(r"[1-9][0-9]{0,17}")  # fullmatch; [0-9] is ASCII, unlike \d


class InvalidToken(Exception):
    """The request's token is refused; the message says why, for a 401 body."""


class MissingToken(InvalidToken):
    """The request carries no bearer token at all."""


def verify_access_token(token: str, secret: str) -> dict:
    """The claims of a valid, unexpired access token; InvalidToken otherwise."""
    if len(token) > MAX_TOKEN_LENGTH:
        raise InvalidToken("invalid token")
    try:
        claims = jwt.decode(token, secret, algorithms=["HS256"],
                            options={"require": ["exp", "sub", "type"]})
    except jwt.ExpiredSignatureError as exc:
        raise InvalidToken("token expired") from exc
    # Defensive: a signed but absurd claim ("exp": 1e999) must be a 401 whatever the
    # PyJWT version lets escape while reading it.
    except (jwt.PyJWTError, ValueError, TypeError, OverflowError) as exc:
        raise InvalidToken("invalid token") from exc
    if claims["type"] != "access":
        raise InvalidToken("not an access token")
    subject = claims["sub"]
    if not isinstance(subject, str) or not SUBJECT.fullmatch(subject):
        raise InvalidToken("invalid token subject")
    return claims


def user_id(claims: dict) -> int:
    """The user id of verified claims (`sub` was checked to be plain decimal digits)."""
    return int(claims["sub"])


def bearer_token(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header (scheme in any case)."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def access_claims(header: str | None, secret: str) -> dict:
    """The verified claims of an Authorization header's bearer token; MissingToken when
    it has none, InvalidToken when it is refused."""
    token = bearer_token(header)
    if token is None:
        raise MissingToken("missing bearer token")
    return verify_access_token(token, secret)
