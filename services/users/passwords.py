"""Password hashing with the stdlib scrypt KDF.

A stored hash is self-describing, so the cost can be raised later without breaking
existing accounts (see `PasswordHasher.needs_rehash`):

    scrypt$<n>$<r>$<p>$<salt, urlsafe base64>$<digest, urlsafe base64>

The clear password never leaves this module's call frames: it is neither stored nor
logged.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass

SCHEME = "scrypt"
SALT_BYTES = 16
DIGEST_BYTES = 32


@dataclass(frozen=True)
class ScryptParams:
    """scrypt cost: `n` CPU/memory cost (a power of two), `r` block size, `p` parallelism.

    The default (n=2**15, r=8) costs about 32 MiB and ~0.1 s per hash: slow for an
    attacker, still fine for a login endpoint.
    """

    n: int = 2**15
    r: int = 8
    p: int = 1

    @property
    def maxmem(self) -> int:
        # What OpenSSL allocates for these parameters; its 32 MiB default limit is
        # too small for n=2**15, so say exactly what we need.
        return 128 * self.r * (self.n + self.p + 2)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text.encode("ascii"))


class PasswordHasher:
    """Hashes new passwords with `params` and verifies hashes made with any params."""

    def __init__(self, params: ScryptParams | None = None):
        self.params = params or ScryptParams()
        # Checked when the account does not exist, so an unknown email costs the
        # same scrypt run as a wrong password (no user enumeration by timing).
        self._decoy = self.hash(secrets.token_urlsafe(16))

    def hash(self, password: str) -> str:
        salt = secrets.token_bytes(SALT_BYTES)
        digest = self._derive(password, salt, self.params)
        p = self.params
        return f"{SCHEME}${p.n}${p.r}${p.p}${_b64(salt)}${_b64(digest)}"

    def verify(self, password: str, stored: str | None) -> bool:
        """True when `password` matches `stored`; `stored=None` (no such user) is False
        after the same amount of work as a real check."""
        params, salt, expected = _parse(stored or self._decoy)
        actual = self._derive(password, salt, params)
        return hmac.compare_digest(actual, expected) and stored is not None

    def needs_rehash(self, stored: str) -> bool:
        """True when `stored` was made with other parameters than the current ones."""
        params, _, _ = _parse(stored)
        return params != self.params

    @staticmethod
    def _derive(password: str, salt: bytes, params: ScryptParams) -> bytes:
        return hashlib.scrypt(
            password.encode("utf-8"),
            salt=salt,
            n=params.n,
            r=params.r,
            p=params.p,
            maxmem=params.maxmem,
            dklen=DIGEST_BYTES,
        )


def _parse(stored: str) -> tuple[ScryptParams, bytes, bytes]:
    """Split a stored hash; ValueError if it is not one this module wrote."""
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != SCHEME:
        raise ValueError("unrecognised password hash format")
    _, n, r, p, salt, digest = parts
    return ScryptParams(int(n), int(r), int(p)), _unb64(salt), _unb64(digest)
