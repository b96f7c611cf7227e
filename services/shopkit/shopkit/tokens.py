"""Access-token checks shared by every HTTP service.

users issues tokens with flask-jwt-extended (HS256, claims sub/exp/type/jti); other
services verify them with the same per-project secret and never call users to do so.
"""

from __future__ import annotations

import jwt


class InvalidToken(Exception):
    pass


def verify_access_token(token: str, secret: str) -> dict:
    """The claims of a valid, unexpired access token; InvalidToken otherwise."""
    try:
        claims = jwt.decode(
            token, secret, algorithms=["HS256"], options={"require": ["exp", "sub"]}
        )
    except jwt.ExpiredSignatureError as exc:
        raise InvalidToken("token expired") from exc
    except jwt.PyJWTError as exc:
        raise InvalidToken("invalid token") from exc
    if claims.get("type", "access") != "access":
        raise InvalidToken("not an access token")
    return claims


def bearer_token(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()
