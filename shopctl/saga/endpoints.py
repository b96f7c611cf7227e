"""Where the saga reaches the services from the host.

`Endpoints` is explicit (tests build one by hand): an address per service, and the
broker nameko services listen on. `discover(config)` resolves each service to its
passing instances in Consul as calls go (shopctl.saga.resolver: a brief cache, calls
spread round-robin, an instance that failed a call avoided for a while), and falls back
to 127.0.0.1 with the port declared in shop.yaml for a service Consul does not know (or
when Consul is not running: both runtimes publish the declared ports on the host).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from shopctl.config import ShopConfig
from shopctl.saga.resolver import Lookup, Resolver


@dataclass(frozen=True)
class Endpoints:
    addresses: dict[str, list[str]] = field(default_factory=dict)  # service -> [host:port]
    amqp: str | None = None  # the broker URI nameko services consume on
    # service -> passing "host:port"s, None when it cannot say (discover() gives Consul's);
    # without it, `addresses` is all there is.
    lookup: Lookup | None = field(default=None, compare=False, repr=False)
    # Where calls go: made here, so dataclasses.replace() gets one for its own addresses.
    resolver: Resolver = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "resolver", Resolver(self.addresses, self.lookup))

    def address(self, service: str) -> str:
        """host:port of one instance of `service` (the next of several, in turn)."""
        found = self.pick(service)
        if found is None:
            from shopctl.errors import UsageError

            raise UsageError(f"no address known for service {service!r}",
                             hint="is it in shop.yaml and running? see `shopctl status`")
        return found

    def pick(self, service: str, avoid: Iterable[str] = ()) -> str | None:
        """host:port of an instance of `service` other than those in `avoid`; None if
        there is none."""
        return self.resolver.pick(service, avoid)

    def suspect(self, service: str, address: str) -> None:
        """`address` failed a call to `service`: avoid it for a while (see Resolver)."""
        self.resolver.suspect(service, address)

    def base_url(self, service: str) -> str:
        return f"http://{self.address(service)}"

    def to_dict(self) -> dict:
        """JSON-able, with the instances each service resolves to now (for another
        process: Endpoints(**to_dict()) calls them without asking Consul)."""
        now = {name: list(self.resolver.addresses(name)) for name in self.addresses}
        return {"addresses": now, "amqp": self.amqp}

    @classmethod
    def of(cls, amqp: str | None = None, **addresses: str) -> Endpoints:
        """Endpoints(amqp=..., shipping="127.0.0.1:8010", ...): one address each."""
        return cls({name: [addr] for name, addr in addresses.items()}, amqp)


def discover(config: ShopConfig, consul_timeout: float = 2.0) -> Endpoints:
    """Endpoints of the running shop: Consul's passing instances, else shop.yaml's ports."""
    refuse_unreachable(config)
    declared = {name: [f"127.0.0.1:{svc.port}"] for name, svc in config.services.items()}
    lookup = None
    if config.infra.consul.enabled:
        from shopctl.consul_acl import registry

        lookup = consul_lookup(registry(config, timeout=consul_timeout))
    amqp = None
    if config.infra.rabbitmq.enabled:
        from shopctl.broker import uri
        from shopctl.state import ProjectState

        amqp = uri(config, ProjectState(config.root).infra_host(), config.infra.rabbitmq.port)
    return Endpoints(declared, amqp, lookup)


def refuse_unreachable(config: ShopConfig) -> None:
    """Drivers run on this host (the CLI, the saga worker). A shop on a swarm whose tasks
    are registered at their overlay addresses cannot be reached from here: say so once,
    rather than let every step time out against addresses only the swarm routes."""
    if config.infra.swarm.address != "overlay":
        return
    from shopctl.errors import UsageError
    from shopctl.runtime.select import remembered
    from shopctl.state import ProjectState

    if remembered(ProjectState(config.root).dir) != "swarm":
        return
    raise UsageError(
        "this shop runs on a swarm with `infra.swarm.address: overlay`: Consul lists its "
        "instances at overlay addresses, which only callers inside the swarm reach, and "
        "sagas are driven from this host",
        hint="set `infra.swarm.address: node` in shop.yaml and run `shopctl up --runtime "
             "swarm`: each task is then registered at its node's published port, which "
             "this host reaches")


def consul_lookup(registry):
    """service -> ["host:port" of each passing instance] from `registry` (a shopctl.
    registry.Registry), None when Consul cannot answer: a Resolver's lookup."""
    from shopctl.errors import ShopctlError

    def lookup(service: str) -> list[str] | None:
        try:
            _, instances = registry.passing(service)
        except ShopctlError:
            return None  # Consul is optional here: shop.yaml's ports are the fallback
        return [f"{_reachable(i.address)}:{i.port}" for i in instances]

    return lookup


def _reachable(host: str) -> str:
    # Registered addresses may be container-internal names; the host reaches published
    # ports on the loopback, so only a numeric or localhost address is trusted as is.
    if not host or not (host == "localhost" or host.replace(".", "").isdigit()):
        return "127.0.0.1"
    return host
