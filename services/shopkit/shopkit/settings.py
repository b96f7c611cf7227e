"""Service settings: the environment first, then Consul KV overrides.

The runtimes pass this contract to every service:

    SHOP_PROJECT       project name (prefix of the Consul KV keys)
    SHOP_SERVICE       the service's name in shop.yaml
    SHOP_HOST          address to bind (0.0.0.0 in containers, 127.0.0.1 locally)
    SHOP_PORT          the service's main port
    SHOP_METRICS_PORT  where /metrics is served when not on SHOP_PORT (gRPC)
    SHOP_DATA_DIR      a writable folder that survives restarts (a volume in containers)
    SHOP_AMQP_URI      RabbitMQ, e.g. amqp://guest:guest@127.0.0.1:5672/
    SHOP_SECRETS_DIR   a folder of files only the service can read, one a secret:
                       jwt_secret (the per-project token secret), service_key (signs
                       and checks service credentials, shopkit.service_auth),
                       consul_token (the service's own Consul ACL token); see `secret`
    CONSUL_HTTP_ADDR   host:port of the Consul agent (optional)

Secrets never travel in the environment a runtime gives a service (`docker inspect`
shows it to anyone who may use the engine); for a service run by hand or in tests, an
environment variable (SHOP_JWT_SECRET, SHOP_SERVICE_KEY, CONSUL_HTTP_TOKEN) is the
fallback.

Per-service settings live in Consul KV under `shopctl/<project>/<service>/<key>`; shared
ones under `shopctl/<project>/_shared/<key>`. A KV value wins over the environment, so an
operator can change a running shop without editing shop.yaml.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

KV_ROOT = "shopctl"
NO_SERVICE_KEY = ("no service key: shopctl puts it in $SHOP_SECRETS_DIR/service_key; a "
                  "service started by hand may set SHOP_SERVICE_KEY")


def kv_prefix(project: str, service: str) -> str:
    return f"{KV_ROOT}/{project}/{service}/"


@dataclass(frozen=True)
class ServiceEnv:
    project: str
    service: str
    host: str
    port: int
    metrics_port: int | None
    data_dir: Path
    amqp_uri: str = field(repr=False)  # holds the broker password
    consul_addr: str | None
    jwt_secret: str | None = field(repr=False)
    service_key: str | None = field(repr=False)
    raw: Mapping[str, str] = field(repr=False, default_factory=dict)

    @classmethod
    def from_environ(
        cls, service: str, default_port: int, environ: Mapping[str, str] | None = None
    ) -> ServiceEnv:
        env = os.environ if environ is None else environ
        metrics = env.get("SHOP_METRICS_PORT")
        return cls(
            project=env.get("SHOP_PROJECT", "shop"),
            service=env.get("SHOP_SERVICE", service),
            host=env.get("SHOP_HOST", "127.0.0.1"),
            port=int(env.get("SHOP_PORT", default_port)),
            metrics_port=int(metrics) if metrics else None,
            data_dir=Path(env.get("SHOP_DATA_DIR", f"./data/{service}")),
            amqp_uri=env.get("SHOP_AMQP_URI", "amqp://guest:guest@127.0.0.1:5672/"),
            consul_addr=env.get("CONSUL_HTTP_ADDR") or None,
            jwt_secret=secret("jwt_secret", env, fallback="SHOP_JWT_SECRET"),
            service_key=secret("service_key", env, fallback="SHOP_SERVICE_KEY"),
            raw=dict(env),
        )


def secret(name: str, environ: Mapping[str, str] | None = None,
           fallback: str | None = None) -> str | None:
    """The secret `name` from $SHOP_SECRETS_DIR/<name>, else the environment variable
    `fallback` (for a service started by hand); None when neither has it."""
    env = os.environ if environ is None else environ
    folder = env.get("SHOP_SECRETS_DIR")
    if folder:
        try:
            value = (Path(folder) / name).read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            value = ""
        if value:
            return value
    return (env.get(fallback) or None) if fallback else None


def consul_token(environ: Mapping[str, str] | None = None) -> str | None:
    """The service's Consul ACL token: it may read its own KV prefix and _shared only."""
    return secret("consul_token", environ, fallback="CONSUL_HTTP_TOKEN")


def read_kv(consul_addr: str | None, prefix: str, timeout: float = 2.0,
            token: str | None = None) -> dict[str, str]:
    """Every key under `prefix` as {relative_key: value}; {} when Consul is absent.

    A service must start without Consul (tests, a laptop without the agent), so an
    unreachable agent is logged and treated as "no overrides". `token` defaults to the
    service's own (consul_token()).
    """
    if not consul_addr:
        return {}
    base = consul_addr if "://" in consul_addr else f"http://{consul_addr}"
    url = f"{base}/v1/kv/{prefix}?recurse=true"
    request = urllib.request.Request(url)
    token = token or consul_token()
    if token:
        request.add_header("X-Consul-Token", token)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            entries = json.load(resp)
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return {}
        log.warning("consul kv read failed", extra={"url": url, "status": exc.code})
        return {}
    except (urllib.error.URLError, OSError, ValueError) as exc:
        log.warning("consul unreachable, using environment only", extra={"error": str(exc)})
        return {}
    out: dict[str, str] = {}
    for entry in entries or []:
        key = entry["Key"][len(prefix):]
        if not key or key.endswith("/"):
            continue
        value = entry.get("Value")
        out[key] = base64.b64decode(value).decode() if value else ""
    return out


def load_settings(
    senv: ServiceEnv, defaults: Mapping[str, str], environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Resolve each key of `defaults`: KV override > environment (upper-cased) > default."""
    env = senv.raw if environ is None else environ
    values = {key: env.get(key.upper(), default) for key, default in defaults.items()}
    shared = read_kv(senv.consul_addr, kv_prefix(senv.project, "_shared"))
    own = read_kv(senv.consul_addr, kv_prefix(senv.project, senv.service))
    for key in defaults:
        if key in own:
            values[key] = own[key]
        elif key in shared:
            values[key] = shared[key]
    return values


def jwt_secret(senv: ServiceEnv) -> str:
    """The per-project token secret ($SHOP_SECRETS_DIR/jwt_secret, or SHOP_JWT_SECRET).
    It is never in Consul KV: whoever reads it can mint tokens for any user."""
    if senv.jwt_secret:
        return senv.jwt_secret
    raise RuntimeError(
        "no token secret: shopctl puts it in $SHOP_SECRETS_DIR/jwt_secret; a service "
        "started by hand may set SHOP_JWT_SECRET")


def service_key(senv: ServiceEnv) -> str:
    """The per-project key of service credentials ($SHOP_SECRETS_DIR/service_key, or
    SHOP_SERVICE_KEY): what shopkit.service_auth signs and checks them with."""
    if senv.service_key:
        return senv.service_key
    raise RuntimeError(NO_SERVICE_KEY)
