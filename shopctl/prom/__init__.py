"""Prometheus for a shop: scrape config, the Consul -> http_sd bridge, and the units or
containers that run both (local and docker runtimes).

    http_sd      stdlib-only bridge: Consul's catalog as Prometheus http_sd JSON
    promconfig   prometheus.yml for either discovery mode (http_sd or consul_sd)
    local        _prometheus / _promsd supervised units (local runtime)
    docker       shopctl-P-prometheus / shopctl-P-promsd containers (docker runtime)
"""
