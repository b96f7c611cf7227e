"""The names shopctl's own infra runs under, which is why no service may take them.

The docker runtime names containers shopctl-P-NAME (and volumes shopctl-P-NAME-data)
for services and infra alike, and Consul lists itself in its catalog as the service
"consul"; a service with one of these names would collide with the infra part. The
local runtime's units are `_NAME`, which no service name can spell. The config
(shopctl.config.model) and `shopctl scaffold` refuse these names; the runtimes name
their infra parts from the same constants.
"""

from __future__ import annotations

CONSUL = "consul"
RABBITMQ = "rabbitmq"
POSTGRES = "postgres"  # the services' databases (shopctl.databases)
PROMETHEUS = "prometheus"
PROMSD = "promsd"  # Prometheus' Consul bridge (shopctl.prom.http_sd)

# name -> what runs under it, for messages
INFRA_PARTS: dict[str, str] = {
    CONSUL: "Consul",
    RABBITMQ: "RabbitMQ",
    POSTGRES: "PostgreSQL",
    PROMETHEUS: "Prometheus",
    PROMSD: "Consul-to-Prometheus bridge (http_sd)",
}
RESERVED_SERVICE_NAMES = frozenset(INFRA_PARTS)
# The order the runtimes start them in (and stop them in reverse): the bridge before
# the Prometheus that scrapes through it.
START_ORDER = (CONSUL, RABBITMQ, POSTGRES, PROMSD, PROMETHEUS)


def enabled_by(part: str) -> str:
    """The shop.yaml setting that turns `part` on or off."""
    return f"infra.{PROMETHEUS if part == PROMSD else part}.enabled"


def reserved_name_refusal(name: str) -> tuple[str, str] | None:
    """(message, hint) when `name` is reserved for infra, else None."""
    part = INFRA_PARTS.get(name)
    if part is None:
        return None
    taken = ", ".join(INFRA_PARTS)
    return (
        f"the service name '{name}' is reserved for shopctl's own {part}",
        f"pick another name; {taken} are taken by shopctl's infra",
    )
