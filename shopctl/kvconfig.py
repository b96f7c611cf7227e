"""Per-service settings in Consul KV: what `shopctl config push / get / set` do.

Layout (shopkit.settings reads the same): `shopctl/<project>/<service>/<key>`.
- A service's `config:` block in shop.yaml maps key -> value as written; values that
  are not strings are stored as JSON (0.5, true, [1, 2]), as `up` stores them.
- Its `env:` entries are stored under the lower-cased name (ACCESS_TOKEN_TTL ->
  access_token_ttl), which is how shopkit.settings.load_settings looks a setting up:
  the KV key beats the environment variable of the same name upper-cased.
- A KV value wins over shop.yaml while it exists. `up` writes only keys that are
  absent, so a value set at run time survives; `config push` overwrites every key
  shop.yaml declares (and leaves keys it does not declare alone).

KEY on the command line is SERVICE.KEY or SERVICE/KEY (the first separator splits,
since service names have neither); an env name may be given as written in shop.yaml.
Services read their settings at start; those they poll (fault knobs, say) change while
they run.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shopctl.errors import RuntimeUnavailable, UsageError

if TYPE_CHECKING:
    from shopctl.config import ShopConfig
    from shopctl.registry import Registry

_KEY = re.compile(r"[A-Za-z0-9_.\-]+(?:/[A-Za-z0-9_.\-]+)*")


@dataclass(frozen=True)
class SettingKey:
    service: str
    key: str | None  # None: the service's whole folder

    @property
    def path(self) -> str:
        """Relative to the project's KV root."""
        return f"{self.service}/{self.key}" if self.key else f"{self.service}/"

    def __str__(self) -> str:
        return f"{self.service}.{self.key}" if self.key else self.service


@dataclass(frozen=True)
class Setting:
    service: str
    key: str
    value: str | None  # in Consul; None when absent
    declared: str | None = None  # what shop.yaml says, encoded as it would be stored
    changed: bool = False  # for push: the stored value differed (or was absent)

    def to_dict(self) -> dict[str, Any]:
        return {"service": self.service, "key": self.key, "value": self.value,
                "shop_yaml": self.declared, "changed": self.changed}


def encode(value: Any) -> str:
    """A shop.yaml value as stored in KV: strings as they are, anything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value)


def declared_settings(config: ShopConfig, service: str) -> dict[str, str]:
    """What shop.yaml declares for a service, as KV keys and stored values. The config
    block wins over an env entry of the same lower-cased name."""
    svc = config.services[service]
    values = {name.lower(): str(value) for name, value in svc.env.items()}
    values.update({key: encode(value) for key, value in svc.config.items()})
    return values


def parse_key(text: str, config: ShopConfig, *, need_key: bool = True) -> SettingKey:
    """'shipping.max_weight' or 'shipping/max_weight' -> SettingKey; 'shipping' alone
    only when need_key is False. Unknown services raise UsageError with a did-you-mean."""
    text = text.strip()
    match = re.match(r"([^./]+)[./](.*)\Z", text)
    service, key = (match.group(1), match.group(2)) if match else (text, "")
    if not service:
        raise UsageError(f"expected SERVICE.KEY, e.g. shipping.max_weight, found {text!r}")
    config.service(service)  # UsageError: no service named ..., did you mean ...
    if not key:
        if need_key:
            raise UsageError(
                f"expected SERVICE.KEY, e.g. {service}.{_example(config, service)}, found {text!r}"
            )
        return SettingKey(service, None)
    if not _KEY.fullmatch(key):
        raise UsageError(f"invalid key {key!r}: letters, digits, _ . - and / only")
    svc = config.services[service]
    if key in svc.env and key not in svc.config:  # ACCESS_TOKEN_TTL -> access_token_ttl
        key = key.lower()
    return SettingKey(service, key)


def _example(config: ShopConfig, service: str) -> str:
    return next(iter(declared_settings(config, service)), "some_key")


def registry_for(config: ShopConfig, timeout: float = 3.0) -> Registry:
    """The project's Consul as the host reaches it (both runtimes publish it on
    127.0.0.1:<infra.consul.port>); RuntimeUnavailable when it does not answer."""
    from shopctl.consul_acl import registry as project_registry

    if not config.infra.consul.enabled:
        raise RuntimeUnavailable(
            "infra.consul.enabled is false, so there is no Consul KV to hold settings"
        )
    registry = project_registry(config, timeout=timeout)
    registry.ping()
    return registry


def push(
    config: ShopConfig, registry: Registry, services: list[str] | None = None
) -> list[Setting]:
    """Write every setting shop.yaml declares for `services` (default all), overwriting."""
    names = services or list(config.services)
    for name in names:
        config.service(name)
    stored = registry.kv_tree()
    done = []
    for name in names:
        for key, value in declared_settings(config, name).items():
            path = f"{name}/{key}"
            changed = stored.get(path) != value
            if changed:
                registry.put_kv(path, value)
            done.append(Setting(name, key, value, value, changed))
    return done


def get(config: ShopConfig, registry: Registry, text: str) -> list[Setting]:
    """One setting (SERVICE.KEY) or every stored and declared one of SERVICE."""
    target = parse_key(text, config, need_key=False)
    declared = declared_settings(config, target.service)
    if target.key is not None:
        value = registry.get_kv(target.path)
        return [Setting(target.service, target.key, value, declared.get(target.key))]
    stored = registry.kv_tree(target.path)
    keys = sorted(set(stored) | {f"{target.path}{k}" for k in declared})
    return [
        Setting(target.service, path[len(target.path):], stored.get(path),
                declared.get(path[len(target.path):]))
        for path in keys
    ]


def set_value(config: ShopConfig, registry: Registry, text: str, value: str) -> Setting:
    """Store VALUE (a string, as given) under SERVICE.KEY."""
    target = parse_key(text, config)
    assert target.key is not None
    before = registry.get_kv(target.path)
    registry.put_kv(target.path, value)
    declared = declared_settings(config, target.service).get(target.key)
    return Setting(target.service, target.key, value, declared, before != value)
