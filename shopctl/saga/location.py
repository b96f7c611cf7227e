"""Names and spelling of a saga log's location, shared by every backend (no imports
of them: the backends import this)."""

from __future__ import annotations

from pathlib import Path

LOG_ENV = "SHOPCTL_SAGA_LOG"
LEASE_ENV = "SHOPCTL_SAGA_LEASE"  # seconds; overrides the default lease (PostgreSQL)
_PG_SCHEMES = ("postgresql://", "postgres://")


def is_postgres(location: str | Path) -> bool:
    return isinstance(location, str) and location.startswith(_PG_SCHEMES)


def mask(location: str | Path) -> str:
    """`location` fit to show: a url's password (whatever its scheme) replaced by ***."""
    if not isinstance(location, str) or "://" not in location:
        return str(location)
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(str(location))
        if parts.password is None:
            return str(location)
        host = parts.netloc.rpartition("@")[2]
        return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))
    except ValueError:
        return "postgresql://***"
