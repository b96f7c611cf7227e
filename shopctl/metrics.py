"""Per-service request metrics of a running shop, from Prometheus or straight from /metrics.

What is measured, for every service (all from shopkit's shop_requests_total,
shop_request_duration_seconds and shop_breaker_state{service, breaker}):
- request_rate  requests per second; health checks (/health, grpc.health.v1) are left
                out, since they are Consul's polling rather than traffic;
- error_rate    server errors per second: HTTP 5xx, nameko's "error" and the gRPC codes
                that mean the server failed (UNKNOWN, INTERNAL, UNAVAILABLE, ...);
                4xx and gRPC client codes are the callers' errors and not counted;
- error_ratio   error_rate / request_rate (None without requests);
- p50_ms/p95_ms latency quantiles, interpolated in the histogram buckets as
                Prometheus' histogram_quantile does (None without requests);
- breaker       closed | open | half_open for services that export the breaker gauge:
                the worst over the service's breakers (open, then half_open, then
                closed).

Sources:
- "prometheus": the shop's Prometheus (infra.prometheus, when it answers) over its HTTP
  API, with rate()/histogram_quantile() over `window` (default 1m);
- "scrape": no Prometheus, so each service's /metrics is read twice, `interval`
  seconds apart, and the figures are the difference between the two reads (a live
  rate over that interval, not an average since start);
- `request_rates()` (for `shopctl status`) uses Prometheus when it answers, else ONE
  read and the average since the process started (process_start_time_seconds), so
  status never waits.

Services are reached from the host at 127.0.0.1:<metrics_port or port>: local
processes listen there and the docker runtime publishes both ports under the same
numbers. Nothing here prints.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import httpx

from shopctl.errors import OperationFailed, RuntimeUnavailable, UsageError

if TYPE_CHECKING:
    from shopctl.config import ShopConfig

HOST = "127.0.0.1"
REQUESTS = "shop_requests_total"
LATENCY = "shop_request_duration_seconds"
BREAKER = "shop_breaker_state"
HEALTH_ENDPOINTS = r"/health|/grpc\.health\.v1\.Health/.*"
ERROR_STATUSES = (
    r"5[0-9][0-9]|error|UNKNOWN|INTERNAL|UNAVAILABLE|DEADLINE_EXCEEDED|DATA_LOSS|UNIMPLEMENTED"
)
BREAKER_STATES = {0: "closed", 1: "open", 2: "half_open"}
# How bad each state is, to report the worst of several breakers: open, then half_open.
_BREAKER_SEVERITY = {0: 0, 2: 1, 1: 2}
_HEALTH_RE = re.compile(HEALTH_ENDPOINTS)
_ERROR_RE = re.compile(ERROR_STATUSES)

Source = Literal["prometheus", "scrape"]


@dataclass(frozen=True)
class ServiceMetrics:
    service: str
    up: bool
    request_rate: float | None = None
    error_rate: float | None = None
    error_ratio: float | None = None
    p50_ms: float | None = None
    p95_ms: float | None = None
    breaker: str | None = None
    problem: str | None = None  # why there are no figures (scrape failed, target down)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("request_rate", "error_rate", "error_ratio", "p50_ms", "p95_ms"):
            if data[key] is not None:
                data[key] = round(data[key], 4)
        return data


@dataclass(frozen=True)
class MetricsReport:
    source: Source
    window: str  # "1m" (Prometheus range) or "2.0s" (between two scrapes)
    services: list[ServiceMetrics] = field(default_factory=list)
    prometheus_url: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "window": self.window,
                "prometheus_url": self.prometheus_url,
                "services": [s.to_dict() for s in self.services]}


# -- pure parts ----------------------------------------------------------------------


def histogram_quantile(q: float, buckets: Iterable[tuple[float, float]]) -> float | None:
    """The q-quantile of a cumulative histogram [(upper bound, count <= bound)], with
    Prometheus' rules: linear interpolation inside the bucket, the lowest bucket starts
    at 0, and a rank in the +Inf bucket answers the highest finite bound."""
    ordered = sorted(buckets)
    if not ordered or not math.isinf(ordered[-1][0]):
        return None
    total = ordered[-1][1]
    if total <= 0:
        return None
    rank = q * total
    previous_bound, previous_count = 0.0, 0.0
    for index, (bound, count) in enumerate(ordered):
        if count >= rank:
            if math.isinf(bound):
                return ordered[index - 1][0] if index > 0 else None
            if index == 0 and bound <= 0:
                return bound
            in_bucket = count - previous_count
            if in_bucket <= 0:
                return bound
            return previous_bound + (bound - previous_bound) * (rank - previous_count) / in_bucket
        previous_bound, previous_count = bound, count
    return None


def parse_vector(payload: Mapping[str, Any], label: str = "service") -> dict[str, float | None]:
    """A Prometheus /api/v1/query answer of resultType vector -> {label value: value};
    NaN and infinities (histogram_quantile of nothing) become None."""
    if payload.get("status") != "success":
        raise OperationFailed(
            f"Prometheus refused the query: {payload.get('errorType')}: {payload.get('error')}"
        )
    data = payload.get("data") or {}
    if data.get("resultType") != "vector":
        raise OperationFailed(f"expected a vector from Prometheus, got {data.get('resultType')}")
    out: dict[str, float | None] = {}
    for item in data.get("result") or []:
        key = (item.get("metric") or {}).get(label)
        if key is None:
            continue
        try:
            value = float(item["value"][1])
        except (KeyError, IndexError, TypeError, ValueError):
            continue
        out[key] = None if math.isnan(value) or math.isinf(value) else value
    return out


Sample = tuple[str, dict[str, str], float]


def parse_exposition(text: str) -> list[Sample]:
    """Prometheus text format -> [(sample name, labels, value)]."""
    from prometheus_client.parser import text_string_to_metric_families

    return [
        (sample.name, dict(sample.labels), float(sample.value))
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


@dataclass(frozen=True)
class Totals:
    """Cumulative figures of one read of /metrics (health checks left out)."""

    requests: float
    errors: float
    buckets: dict[float, float]  # le -> cumulative count, summed over endpoints
    breaker: float | None
    started_at: float | None  # process_start_time_seconds


def totals(samples: Iterable[Sample]) -> Totals:
    requests = errors = 0.0
    buckets: dict[float, float] = {}
    breaker = started = None
    for name, labels, value in samples:
        if name == REQUESTS and not _HEALTH_RE.fullmatch(labels.get("endpoint", "")):
            requests += value
            if _ERROR_RE.fullmatch(labels.get("status", "")):
                errors += value
        elif name == f"{LATENCY}_bucket" and not _HEALTH_RE.fullmatch(labels.get("endpoint", "")):
            le = float(labels.get("le", "+Inf"))
            buckets[le] = buckets.get(le, 0.0) + value
        elif name == BREAKER:
            breaker = worst_breaker(breaker, value)
        elif name == "process_start_time_seconds":
            started = value
    return Totals(requests, errors, buckets, breaker, started)


def _delta(after: float, before: float) -> float:
    """Counter increase; a smaller value means the process restarted (counted from 0)."""
    return after - before if after >= before else after


def window_metrics(service: str, before: Totals, after: Totals, seconds: float) -> ServiceMetrics:
    """What happened between two reads of a service's /metrics, `seconds` apart."""
    seconds = max(seconds, 1e-9)
    requests = _delta(after.requests, before.requests)
    errors = _delta(after.errors, before.errors)
    buckets = [(le, _delta(n, before.buckets.get(le, 0.0))) for le, n in after.buckets.items()]
    p50, p95 = (histogram_quantile(q, buckets) for q in (0.5, 0.95))
    return ServiceMetrics(
        service=service, up=True,
        request_rate=requests / seconds,
        error_rate=errors / seconds,
        error_ratio=errors / requests if requests else None,
        p50_ms=None if p50 is None else p50 * 1000,
        p95_ms=None if p95 is None else p95 * 1000,
        breaker=breaker_name(after.breaker),
    )


def worst_breaker(a: float | None, b: float | None) -> float | None:
    """The worse of two breaker gauge values (None: no breaker); a value that is no
    known state counts as the worst, so it shows rather than hides."""
    if a is None or b is None:
        return b if a is None else a

    def severity(value: float) -> int:
        return _BREAKER_SEVERITY.get(int(value), len(_BREAKER_SEVERITY))

    return a if severity(a) >= severity(b) else b


def breaker_name(value: float | None) -> str | None:
    if value is None:
        return None
    return BREAKER_STATES.get(int(value), f"unknown({value:g})")


def since_start_rate(t: Totals, now: float) -> float | None:
    if t.started_at is None or now <= t.started_at:
        return None
    return t.requests / (now - t.started_at)


def promql(project: str, window: str) -> dict[str, str]:
    """The queries behind each figure, for one project's targets."""
    # Backquoted PromQL strings take the regular expressions as they are (no escapes).
    traffic = f'project="{project}",endpoint!~`{HEALTH_ENDPOINTS}`'
    errors = f"{traffic},status=~`{ERROR_STATUSES}`"
    breakers = f'{BREAKER}{{project="{project}"}}'
    return {
        "up": f'max by (service) (up{{project="{project}"}})',
        "request_rate": f"sum by (service) (rate({REQUESTS}{{{traffic}}}[{window}]))",
        "error_rate": f"sum by (service) (rate({REQUESTS}{{{errors}}}[{window}]))",
        "p50": f"histogram_quantile(0.5, sum by (service, le) "
               f"(rate({LATENCY}_bucket{{{traffic}}}[{window}])))",
        "p95": f"histogram_quantile(0.95, sum by (service, le) "
               f"(rate({LATENCY}_bucket{{{traffic}}}[{window}])))",
        # The worst breaker a service: any open one (1), else the highest (half_open 2
        # over closed 0); `or` adds the right side only for services the left lacks.
        "breaker": f"max by (service) ({breakers} == 1) or max by (service) ({breakers})",
    }


def from_prometheus_results(
    services: Iterable[str], results: Mapping[str, Mapping[str, float | None]]
) -> list[ServiceMetrics]:
    """Join the per-query vectors (see promql) into one row a service."""
    rows = []
    for name in services:
        up_value = results["up"].get(name)
        if up_value is None:
            rows.append(ServiceMetrics(name, up=False, problem="not a Prometheus target (yet)"))
            continue
        if up_value < 1:
            rows.append(ServiceMetrics(name, up=False, problem="target down in Prometheus",
                                       breaker=breaker_name(results["breaker"].get(name))))
            continue
        rate = results["request_rate"].get(name) or 0.0
        errors = results["error_rate"].get(name) or 0.0
        p50, p95 = results["p50"].get(name), results["p95"].get(name)
        rows.append(ServiceMetrics(
            service=name, up=True, request_rate=rate, error_rate=errors,
            error_ratio=errors / rate if rate else None,
            p50_ms=None if p50 is None else p50 * 1000,
            p95_ms=None if p95 is None else p95 * 1000,
            breaker=breaker_name(results["breaker"].get(name)),
        ))
    return rows


# -- talking to things -----------------------------------------------------------------


def prometheus_url(config: ShopConfig) -> str | None:
    """The shop's Prometheus as the host reaches it, when enabled and ready."""
    prom = config.infra.prometheus
    if not prom.enabled:
        return None
    url = f"http://{HOST}:{prom.port}"
    try:
        ready = httpx.get(f"{url}/-/ready", timeout=1.0, trust_env=False).status_code == 200
    except httpx.HTTPError:
        ready = False
    return url if ready else None


def query(
    url: str, expr: str, timeout: float = 5.0, at: float | None = None
) -> dict[str, float | None]:
    """One instant query; `at` (unix time) pins the evaluation time, so several queries
    that make up one report see the same data (an error rate never above its request
    rate because a scrape landed between the two queries)."""
    params = {"query": expr}
    if at is not None:
        params["time"] = f"{at:.3f}"
    try:
        response = httpx.get(f"{url}/api/v1/query", params=params, timeout=timeout,
                             trust_env=False)
        payload = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise RuntimeUnavailable(f"Prometheus at {url} did not answer a query: {exc}") from exc
    return parse_vector(payload)


def metrics_url(config: ShopConfig, service: str) -> str:
    svc = config.services[service]
    return f"http://{HOST}:{svc.metrics_port or svc.port}/metrics"


def read_totals(url: str, timeout: float = 2.0) -> Totals:
    response = httpx.get(url, timeout=timeout, trust_env=False)
    response.raise_for_status()
    return totals(parse_exposition(response.text))


def _read_all(config: ShopConfig, names: list[str]) -> dict[str, Totals | str]:
    """{service: Totals, or why it could not be read}, read in parallel."""

    def one(name: str) -> Totals | str:
        try:
            return read_totals(metrics_url(config, name))
        except (httpx.HTTPError, ValueError) as exc:
            return f"/metrics unreadable: {type(exc).__name__}: {exc}"[:200]

    with ThreadPoolExecutor(max_workers=max(1, min(8, len(names)))) as pool:
        return dict(zip(names, pool.map(one, names), strict=True))


def _names(config: ShopConfig, service: str | None) -> list[str]:
    if service is None:
        return list(config.services)
    config.service(service)  # UsageError with a did-you-mean hint
    return [service]


def collect(
    config: ShopConfig,
    service: str | None = None,
    *,
    source: Literal["auto", "prometheus", "scrape"] = "auto",
    window: str = "1m",
    interval: float = 2.0,
) -> MetricsReport:
    """Figures for one service or all (see the module doc for sources and meaning)."""
    names = _names(config, service)
    url = prometheus_url(config) if source in ("auto", "prometheus") else None
    if source == "prometheus" and url is None:
        raise RuntimeUnavailable(
            f"Prometheus does not answer on 127.0.0.1:{config.infra.prometheus.port}",
            hint="set infra.prometheus.enabled: true and run `shopctl up`, or leave out "
                 "--source to read each service's /metrics directly",
        )
    if url is not None:
        if not re.fullmatch(r"[0-9]+[smhd]", window):
            raise UsageError(f"window {window!r} is not a Prometheus duration like 30s or 1m")
        at = time.time()
        results = {key: query(url, expr, at=at)
                   for key, expr in promql(config.project, window).items()}
        return MetricsReport("prometheus", window, from_prometheus_results(names, results), url)
    if interval <= 0:
        raise UsageError("the scrape interval must be positive")
    first = _read_all(config, names)
    started = time.monotonic()
    time.sleep(interval)
    second = _read_all(config, names)
    seconds = time.monotonic() - started
    rows = []
    for name in names:
        before, after = first[name], second[name]
        if isinstance(after, str) or isinstance(before, str):
            problem = after if isinstance(after, str) else before
            rows.append(ServiceMetrics(name, up=False, problem=str(problem)))
        else:
            rows.append(window_metrics(name, before, after, seconds))
    return MetricsReport("scrape", f"{seconds:.1f}s", rows)


def request_rates(
    config: ShopConfig, services: Iterable[str]
) -> tuple[str | None, dict[str, float]]:
    """Requests per second of the given (running) services, cheaply, for `status`:
    ("prometheus", rate over 1m) when Prometheus answers, else ("since_start", the
    average since each process started, from one read). Never raises: a shop without
    metrics just has none."""
    names = [n for n in services if n in config.services]
    if not names:
        return None, {}
    try:
        url = prometheus_url(config)
        if url is not None:
            at = time.time()
            rates = query(url, promql(config.project, "1m")["request_rate"], timeout=2.0, at=at)
            up = query(url, promql(config.project, "1m")["up"], timeout=2.0, at=at)
            return "prometheus", {
                n: rates.get(n) or 0.0 for n in names if (up.get(n) or 0) >= 1
            }
    except (OperationFailed, RuntimeUnavailable):
        pass
    now = time.time()
    rates = {}
    for name, read in _read_all(config, names).items():
        if isinstance(read, Totals) and (rate := since_start_rate(read, now)) is not None:
            rates[name] = rate
    return ("since_start", rates) if rates else (None, {})


def with_request_rates(config: ShopConfig, rows: list) -> tuple[str | None, list]:
    """`status` rows (shopctl.status.ServiceRow) with request_rate set where known, and
    where the rates came from ("prometheus", "since_start" or None)."""
    from dataclasses import replace

    # Rates are per service: a service that runs several instances has none per row
    # (`shopctl metrics` shows its total).
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.service] = counts.get(row.service, 0) + 1
    single = [row.name for row in rows
              if row.state == "running" and counts[row.service] == 1 and row.name == row.service]
    source, rates = request_rates(config, single)
    return source, [replace(row, request_rate=rates.get(row.name) if row.name in single
                            else None) for row in rows]
