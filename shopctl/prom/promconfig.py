"""prometheus.yml for a shop, in one of two discovery modes (pure: text in, text out).

- "http": Prometheus polls the shopctl bridge (http_sd.py), which turns Consul's
  catalog into targets. Works with any Prometheus since 2.28, including Debian's
  build, which has no consul_sd_configs.
- "consul": Prometheus asks Consul itself (consul_sd_configs) and relabels on the
  registration's Meta; for a Prometheus built with Consul discovery (prom/prometheus).

Either way every target carries the labels service, kind and project, and samples keep
their own labels (honor_labels), so `shop_requests_total{service="shipping"}` means the
same thing in both modes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import yaml

if TYPE_CHECKING:
    from shopctl.config import ShopConfig

Discovery = Literal["http", "consul"]
JOB = "shop"
SCRAPE_INTERVAL = "5s"
SD_REFRESH = "2s"


def discovery_mode(config: ShopConfig, runtime: str) -> Discovery:
    """infra.prometheus.discovery, with `auto` resolved: the shopctl/ image and the local
    (Debian) binary lack consul_sd, so they use the bridge; another image (a registry's
    prom/prometheus) has consul_sd and gets it directly."""
    prom = config.infra.prometheus
    choice = getattr(prom, "discovery", "auto")
    if choice in ("http", "consul"):
        return choice
    if runtime == "docker" and not prom.image.startswith("shopctl/"):
        return "consul"
    return "http"


def _base(job: dict) -> dict:
    return {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
        "scrape_configs": [job],
    }


def http_sd_config(bridge_url: str) -> str:
    job = {
        "job_name": JOB,
        "honor_labels": True,
        "scrape_interval": SCRAPE_INTERVAL,
        "http_sd_configs": [{"url": bridge_url, "refresh_interval": SD_REFRESH}],
    }
    return yaml.safe_dump(_base(job), sort_keys=False)


def consul_relabels(project: str | None) -> list[dict]:
    """The relabelling that turns a shopctl registration into a scrape target."""
    rules: list[dict] = []
    if project is not None:
        rules.append({"source_labels": ["__meta_consul_service_metadata_project"],
                      "regex": project, "action": "keep"})
    rules += [
        {"source_labels": ["__meta_consul_service_metadata_metrics_port"],
         "regex": "[0-9]+", "action": "keep"},
        {"source_labels": ["__meta_consul_service_address",
                           "__meta_consul_service_metadata_metrics_port"],
         "separator": ";", "regex": "(.+);([0-9]+)",
         "target_label": "__address__", "replacement": "$1:$2"},
        {"source_labels": ["__meta_consul_service_metadata_metrics_path"],
         "regex": "(.+)", "target_label": "__metrics_path__"},
        {"source_labels": ["__meta_consul_service"], "target_label": "service"},
        {"source_labels": ["__meta_consul_service_metadata_kind"], "target_label": "kind"},
        {"source_labels": ["__meta_consul_service_metadata_project"], "target_label": "project"},
    ]
    return rules


def consul_sd_config(consul_server: str, project: str | None, token: str | None = None) -> str:
    """`token`: a Consul ACL token that may read the catalog (shopctl.consul_acl READER)."""
    job = {
        "job_name": JOB,
        "honor_labels": True,
        "scrape_interval": SCRAPE_INTERVAL,
        "consul_sd_configs": [{"server": consul_server, **({"token": token} if token else {})}],
        "relabel_configs": consul_relabels(project),
    }
    return yaml.safe_dump(_base(job), sort_keys=False)
