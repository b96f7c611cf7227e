"""Where the saga reaches the services from the host.

`Endpoints` is explicit (tests build one by hand); `discover(config)` asks Consul's
agent for each service's address and port and falls back to 127.0.0.1 with the port
declared in shop.yaml when Consul is not running (the local runtime publishes the
declared ports on the host either way).
"""

from __future__ import annotations

from dataclasses import dataclass

from shopctl.config import ShopConfig


@dataclass(frozen=True)
class Endpoints:
    orders_amqp: str  # the broker URI the orders service consumes on
    inventory: str  # host:port of the gRPC server
    payments_url: str  # base URL, no trailing slash
    catalog_url: str  # base URL, no trailing slash


def discover(config: ShopConfig, consul_timeout: float = 2.0) -> Endpoints:
    """Endpoints of the running shop: Consul's view when available, else shop.yaml's."""
    addresses: dict[str, tuple[str, int]] = {}
    if config.infra.consul.enabled:
        addresses = _from_consul(config, consul_timeout)

    def where(name: str) -> tuple[str, int]:
        if name in addresses:
            return addresses[name]
        return "127.0.0.1", config.services[name].port if name in config.services else 0

    inv_host, inv_port = where("inventory")
    pay_host, pay_port = where("payments")
    cat_host, cat_port = where("catalog")
    amqp = f"amqp://guest:guest@127.0.0.1:{config.infra.rabbitmq.port}/"
    return Endpoints(
        orders_amqp=amqp,
        inventory=f"{inv_host}:{inv_port}",
        payments_url=f"http://{pay_host}:{pay_port}",
        catalog_url=f"http://{cat_host}:{cat_port}",
    )


def _from_consul(config: ShopConfig, timeout: float) -> dict[str, tuple[str, int]]:
    from shopctl.errors import ShopctlError
    from shopctl.registry import Registry

    registry = Registry(f"127.0.0.1:{config.infra.consul.port}", config.project,
                        timeout=timeout)
    try:
        health = registry.health()
    except ShopctlError:
        return {}  # Consul is optional here: shop.yaml's ports are the fallback
    # Registered addresses may be container-internal names; the host reaches published
    # ports on the loopback, so only a numeric or localhost address is trusted as is.
    found = {}
    for name, entry in health.items():
        if entry.port:
            host = entry.address or "127.0.0.1"
            if not (host == "localhost" or host.replace(".", "").isdigit()):
                host = "127.0.0.1"
            found[name] = (host, entry.port)
    return found
