"""Where the saga reaches the services from the host.

`Endpoints` is explicit (tests build one by hand): an address per service, and the
broker nameko services listen on. `discover(config)` asks Consul for the passing
instances of every service of the project and falls back to 127.0.0.1 with the port
declared in shop.yaml for a service Consul does not know (or when Consul is not
running: both runtimes publish the declared ports on the host).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from shopctl.config import ShopConfig


@dataclass(frozen=True)
class Endpoints:
    addresses: dict[str, list[str]] = field(default_factory=dict)  # service -> [host:port]
    amqp: str | None = None  # the broker URI nameko services consume on

    def address(self, service: str) -> str:
        """host:port of one instance of `service` (a random one of several)."""
        found = self.addresses.get(service)
        if not found:
            from shopctl.errors import UsageError

            raise UsageError(f"no address known for service {service!r}",
                             hint="is it in shop.yaml and running? see `shopctl status`")
        return found[0] if len(found) == 1 else random.choice(found)

    def base_url(self, service: str) -> str:
        return f"http://{self.address(service)}"

    def to_dict(self) -> dict:
        return {"addresses": self.addresses, "amqp": self.amqp}

    @classmethod
    def of(cls, amqp: str | None = None, **addresses: str) -> Endpoints:
        """Endpoints(amqp=..., shipping="127.0.0.1:8010", ...): one address each."""
        return cls({name: [addr] for name, addr in addresses.items()}, amqp)


def discover(config: ShopConfig, consul_timeout: float = 2.0) -> Endpoints:
    """Endpoints of the running shop: Consul's passing instances, else shop.yaml's ports."""
    passing: dict[str, list[str]] = {}
    if config.infra.consul.enabled:
        passing = _from_consul(config, consul_timeout)
    addresses = {name: passing.get(name) or [f"127.0.0.1:{svc.port}"]
                 for name, svc in config.services.items()}
    amqp = None
    if config.infra.rabbitmq.enabled:
        from shopctl.broker import uri

        amqp = uri(config, "127.0.0.1", config.infra.rabbitmq.port)
    return Endpoints(addresses, amqp)


def _from_consul(config: ShopConfig, timeout: float) -> dict[str, list[str]]:
    from shopctl.consul_acl import registry as project_registry
    from shopctl.errors import ShopctlError

    registry = project_registry(config, timeout=timeout)
    try:
        instances = registry.passing_instances()
    except ShopctlError:
        return {}  # Consul is optional here: shop.yaml's ports are the fallback
    found: dict[str, list[str]] = {}
    for name, pairs in instances.items():
        for host, port in pairs:
            # Registered addresses may be container-internal names; the host reaches
            # published ports on the loopback, so only a numeric or localhost address is
            # trusted as is.
            if not host or not (host == "localhost" or host.replace(".", "").isdigit()):
                host = "127.0.0.1"
            found.setdefault(name, []).append(f"{host}:{port}")
    return found
