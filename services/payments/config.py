"""Start-up settings of the payments service, resolved as Consul KV > environment > default.

Each key below can be set as the upper-cased environment variable (BREAKER_FAIL_MAX=3)
or as the KV key shopctl/<project>/<service>/<key>. Only the fault knobs change at run
time (see faults.py); the others are read once at start. Invalid values stop the
start-up with a message naming the key, rather than running with a silent default.

Where state lives is no setting but a secret: `database_url` in $SHOP_SECRETS_DIR
(shopctl's, for a service that declares `database: postgresql`), or SHOP_DATABASE_URL
for a service started by hand; without one, SQLite in SHOP_DATA_DIR.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from faults import KnobError, Knobs, parse_knobs
from shopkit.settings import ServiceEnv, load_settings, secret, service_key

DEFAULTS = {
    "failure_rate": "0",
    "latency_ms": "0",
    "decline": "false",
    "fault_seed": "0",
    "breaker_fail_max": "5",
    "breaker_reset_timeout": "10",
    "provider_timeout_ms": "2000",
    "kv_poll_seconds": "2",
}


class ConfigError(ValueError):
    """A setting has an invalid value."""


@dataclass(frozen=True)
class Config:
    knobs: Knobs
    fault_seed: int
    breaker_fail_max: int
    breaker_reset_timeout_s: float
    provider_timeout_s: float
    kv_poll_s: float
    # Checks the service credentials of charges, refunds and /admin (shopkit.service_auth).
    service_key: str = field(repr=False)
    # The service's own PostgreSQL database (a URL with its password), given by shopctl
    # as the secret `database_url`; None: SQLite in SHOP_DATA_DIR (db.open_database).
    database_url: str | None = field(default=None, repr=False)

    @classmethod
    def load(cls, senv: ServiceEnv) -> Config:
        try:
            key = service_key(senv)
        except RuntimeError as exc:
            raise ConfigError(str(exc)) from None
        values = load_settings(senv, DEFAULTS)
        try:
            knobs = Knobs(**parse_knobs({k: values[k] for k in ("failure_rate", "latency_ms",
                                                                 "decline")}))
        except KnobError as exc:
            raise ConfigError(str(exc)) from None
        return cls(
            knobs=knobs,
            fault_seed=_number(values, "fault_seed", int, minimum=0),
            breaker_fail_max=_number(values, "breaker_fail_max", int, minimum=1),
            breaker_reset_timeout_s=_number(values, "breaker_reset_timeout", float, minimum=0.01),
            provider_timeout_s=_number(values, "provider_timeout_ms", int, minimum=1) / 1000,
            kv_poll_s=_number(values, "kv_poll_seconds", float, minimum=0.01),
            service_key=key,
            database_url=secret("database_url", senv.raw, fallback="SHOP_DATABASE_URL"),
        )


def _number(values: dict[str, str], key: str, kind: type[int] | type[float], minimum: float):
    try:
        number = kind(values[key])
    except ValueError:
        raise ConfigError(f"{key} must be a {kind.__name__}, got {values[key]!r}") from None
    if not number >= minimum:  # also rejects NaN
        raise ConfigError(f"{key} must be at least {minimum}, got {values[key]!r}")
    return number
