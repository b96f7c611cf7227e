"""shopctl's own infra as unit specs (shopctl.units.UnitSpec): pure builders, one
module per runtime flavour, that read the config (and the project's state files) and
start nothing. The runtimes ensure, observe and remove the units; nothing here calls
a runtime.

    docker   Consul, RabbitMQ, then Prometheus and its bridge (shopctl.prom.docker)
    local    the same as supervised processes (shopctl.prom.local for Prometheus)
"""
