"""The pure parts of issue 7's observability: Consul catalog -> http_sd targets, the
generated prometheus.yml, PromQL answers and /metrics text -> per-service figures."""

from __future__ import annotations

import math

import pytest
import yaml

from shopctl.config import ShopConfig
from shopctl.errors import OperationFailed
from shopctl.metrics import (
    ServiceMetrics,
    from_prometheus_results,
    histogram_quantile,
    parse_exposition,
    parse_vector,
    promql,
    since_start_rate,
    totals,
    window_metrics,
)
from shopctl.prom.http_sd import target_groups
from shopctl.prom.promconfig import consul_sd_config, discovery_mode, http_sd_config


def entry(name: str, address: str = "10.0.0.5", port: int = 8001, **meta) -> dict:
    meta = {"project": "shop", "kind": "flask", "metrics_port": str(port),
            "metrics_path": "/metrics", **meta}
    return {"ServiceName": name, "ServiceID": f"shop-{name}", "ServiceAddress": address,
            "Address": "172.17.0.2", "ServicePort": port,
            "ServiceMeta": {k: v for k, v in meta.items() if v is not None}}


# -- http_sd bridge ------------------------------------------------------------------


def test_each_registered_instance_becomes_a_target_at_its_metrics_port():
    catalog = {
        "users": [entry("users")],
        "inventory": [entry("inventory", port=50051, kind="grpc", metrics_port="9103")],
    }
    assert target_groups(catalog, "shop") == [
        {"targets": ["10.0.0.5:9103"],
         "labels": {"service": "inventory", "kind": "grpc", "project": "shop",
                    "__metrics_path__": "/metrics"}},
        {"targets": ["10.0.0.5:8001"],
         "labels": {"service": "users", "kind": "flask", "project": "shop",
                    "__metrics_path__": "/metrics"}},
    ]


def test_consul_itself_other_projects_and_entries_without_metrics_port_are_left_out():
    catalog = {
        "consul": [{"ServiceName": "consul", "ServiceAddress": "", "Address": "10.0.0.2",
                    "ServicePort": 8300, "ServiceMeta": {}}],
        "users": [entry("users"), entry("users", address="10.0.0.9", project="other")],
        "legacy": [entry("legacy", metrics_port=None)],
    }
    groups = target_groups(catalog, "shop")
    assert [g["targets"] for g in groups] == [["10.0.0.5:8001"]]
    assert len(target_groups(catalog)) == 2  # without a project filter: both users


def test_node_address_stands_in_for_an_empty_service_address_and_path_defaults():
    groups = target_groups({"users": [entry("users", address="", metrics_path=None)]}, "shop")
    assert groups[0]["targets"] == ["172.17.0.2:8001"]
    assert groups[0]["labels"]["__metrics_path__"] == "/metrics"


def test_an_ipv6_address_is_bracketed():
    groups = target_groups({"users": [entry("users", address="fd00::5")]}, "shop")
    assert groups[0]["targets"] == ["[fd00::5]:8001"]


# -- prometheus.yml ------------------------------------------------------------------


def shop(**prometheus) -> ShopConfig:
    return ShopConfig.model_validate({
        "project": "shop",
        "infra": {"prometheus": {"enabled": True, **prometheus}},
        "services": {"users": {"kind": "flask", "port": 8001, "env": {"ACCESS_TOKEN_TTL": 900}},
                     "payments": {"kind": "fastapi", "port": 8004,
                                  "config": {"failure_rate": 0.0, "mode": "fast"}}},
    })


def test_http_sd_config_polls_the_bridge_and_keeps_the_samples_labels():
    data = yaml.safe_load(http_sd_config("http://127.0.0.1:9091/targets"))
    (job,) = data["scrape_configs"]
    assert job["http_sd_configs"] == [{"url": "http://127.0.0.1:9091/targets",
                                       "refresh_interval": "2s"}]
    assert job["honor_labels"] is True


def test_consul_sd_config_relabels_on_the_registration_meta():
    (job,) = yaml.safe_load(consul_sd_config("consul:8500", "shop"))["scrape_configs"]
    assert job["consul_sd_configs"] == [{"server": "consul:8500"}]
    keeps = [r for r in job["relabel_configs"] if r.get("action") == "keep"]
    assert {"source_labels": ["__meta_consul_service_metadata_project"], "regex": "shop",
            "action": "keep"} in keeps
    rules = {tuple(r["source_labels"]): r for r in job["relabel_configs"] if "target_label" in r}
    assert rules[("__meta_consul_service_metadata_kind",)]["target_label"] == "kind"
    address = rules[("__meta_consul_service_address",
                     "__meta_consul_service_metadata_metrics_port")]
    assert address["target_label"] == "__address__" and address["replacement"] == "$1:$2"


@pytest.mark.parametrize(("image", "choice", "runtime", "mode"), [
    ("shopctl/prometheus:2.42", "auto", "docker", "http"),
    ("prom/prometheus:v2.51.0", "auto", "docker", "consul"),
    ("prom/prometheus:v2.51.0", "auto", "local", "http"),
    ("prom/prometheus:v2.51.0", "http", "docker", "http"),
    ("shopctl/prometheus:2.42", "consul", "local", "consul"),
])
def test_discovery_mode(image, choice, runtime, mode):
    assert discovery_mode(shop(image=image, discovery=choice), runtime) == mode


# -- Prometheus answers -----------------------------------------------------------------


def vector(*pairs, status="success") -> dict:
    return {"status": status, "data": {"resultType": "vector", "result": [
        {"metric": {"service": name}, "value": [1700000000.0, value]} for name, value in pairs
    ]}}


def test_parse_vector_maps_service_to_value_and_nan_to_none():
    assert parse_vector(vector(("users", "1.5"), ("catalog", "NaN"), ("x", "+Inf"))) == {
        "users": 1.5, "catalog": None, "x": None}


def test_parse_vector_raises_on_a_refused_query():
    with pytest.raises(OperationFailed, match="bad_data"):
        parse_vector({"status": "error", "errorType": "bad_data", "error": "parse error"})


def test_queries_select_the_project_and_leave_health_checks_out():
    queries = promql("shop", "1m")
    assert 'project="shop"' in queries["request_rate"]
    assert "endpoint!~`/health|" in queries["request_rate"]
    assert "[1m]" in queries["p95"] and "histogram_quantile(0.95" in queries["p95"]
    # Any service's breakers, the worst of them: an open one, else the highest code.
    assert queries["breaker"] == (
        'max by (service) (shop_breaker_state{project="shop"} == 1) '
        'or max by (service) (shop_breaker_state{project="shop"})'
    )


def test_results_join_into_rows_with_ratio_breaker_and_down_targets():
    results = {
        "up": {"payments": 1.0, "users": 1.0, "catalog": 0.0},
        "request_rate": {"payments": 4.0},
        "error_rate": {"payments": 1.0},
        "p50": {"payments": 0.004}, "p95": {"payments": None},
        "breaker": {"payments": 1.0},
    }
    rows = {r.service: r for r in from_prometheus_results(["payments", "users", "catalog",
                                                            "orders"], results)}
    assert rows["payments"] == ServiceMetrics("payments", True, 4.0, 1.0, 0.25, 4.0, None, "open")
    assert rows["users"].request_rate == 0.0 and rows["users"].error_ratio is None
    assert not rows["catalog"].up and "down" in rows["catalog"].problem
    assert not rows["orders"].up


# -- histograms and /metrics text ------------------------------------------------------------


def test_histogram_quantile_interpolates_like_prometheus():
    buckets = [(0.1, 10.0), (0.2, 30.0), (math.inf, 40.0)]
    assert histogram_quantile(0.25, buckets) == pytest.approx(0.1)  # rank 10: end of first
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.15)  # rank 20: mid second
    assert histogram_quantile(0.95, buckets) == 0.2  # in +Inf: the highest finite bound
    assert histogram_quantile(0.5, [(0.1, 0.0), (math.inf, 0.0)]) is None
    assert histogram_quantile(0.5, [(0.1, 1.0)]) is None  # no +Inf bucket: not a histogram


EXPOSITION = """\
# TYPE shop_requests_total counter
shop_requests_total{service="payments",endpoint="/charges",method="POST",status="201"} %(ok)s
shop_requests_total{service="payments",endpoint="/charges",method="POST",status="503"} %(err)s
shop_requests_total{service="payments",endpoint="/charges",method="POST",status="409"} 1.0
shop_requests_total{service="payments",endpoint="/health",method="GET",status="200"} 500.0
# TYPE shop_request_duration_seconds histogram
shop_request_duration_seconds_bucket{endpoint="/charges",le="0.01"} %(fast)s
shop_request_duration_seconds_bucket{endpoint="/charges",le="0.1"} %(all)s
shop_request_duration_seconds_bucket{endpoint="/charges",le="+Inf"} %(all)s
shop_request_duration_seconds_count{service="payments",endpoint="/charges",method="POST"} %(all)s
shop_request_duration_seconds_sum{service="payments",endpoint="/charges",method="POST"} 1.0
shop_request_duration_seconds_bucket{endpoint="/health",le="0.01"} 500.0
shop_request_duration_seconds_bucket{endpoint="/health",le="0.1"} 500.0
shop_request_duration_seconds_bucket{endpoint="/health",le="+Inf"} 500.0
# TYPE shop_breaker_state gauge
shop_breaker_state{service="payments",breaker="provider"} %(breaker)s
shop_breaker_state{service="payments",breaker="bank"} %(other_breaker)s
# TYPE process_start_time_seconds gauge
process_start_time_seconds 1000.0
"""


def read(ok, err, fast, breaker=0, other_breaker=0):
    text = EXPOSITION % {"ok": ok, "err": err, "fast": fast, "all": ok + err + 1,
                         "breaker": breaker, "other_breaker": other_breaker}
    return totals(parse_exposition(text))


def test_totals_leave_health_checks_out_and_count_server_errors_only():
    t = read(ok=10, err=4, fast=5)
    assert t.requests == 15  # 10 + 4 + one 409; the 500 health checks are not traffic
    assert t.errors == 4  # 503s; the 409 is the caller's error
    assert t.buckets[math.inf] == 15 and t.started_at == 1000.0
    assert since_start_rate(t, now=1015.0) == pytest.approx(1.0)


def test_window_metrics_are_the_difference_of_two_reads():
    before, after = read(ok=10, err=0, fast=5), read(ok=16, err=2, fast=9, breaker=2)
    m = window_metrics("payments", before, after, seconds=2.0)
    assert m.request_rate == pytest.approx(4.0) and m.error_rate == pytest.approx(1.0)
    assert m.error_ratio == pytest.approx(0.25)
    # 8 new requests: 4 under 10 ms, 4 between 10 and 100 ms -> p50 at 10 ms.
    assert m.p50_ms == pytest.approx(10.0)
    assert m.breaker == "half_open"


def test_a_restarted_process_counts_from_zero():
    before, after = read(ok=100, err=0, fast=50), read(ok=3, err=0, fast=3)
    assert window_metrics("payments", before, after, 1.0).request_rate == pytest.approx(4.0)


def test_no_requests_in_the_window_means_zero_rate_and_no_latency():
    t = read(ok=10, err=0, fast=5)
    m = window_metrics("payments", t, t, 1.0)
    assert (m.request_rate, m.error_ratio, m.p50_ms, m.breaker) == (0.0, None, None, "closed")


@pytest.mark.parametrize(("states", "worst"), [
    ((0, 0), "closed"), ((2, 0), "half_open"), ((0, 2), "half_open"),
    ((1, 2), "open"), ((2, 1), "open"),
])
def test_the_worst_of_a_services_breakers_is_reported(states, worst):
    t = read(ok=1, err=0, fast=1, breaker=states[0], other_breaker=states[1])
    assert window_metrics("payments", t, t, 1.0).breaker == worst
