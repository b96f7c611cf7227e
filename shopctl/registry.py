"""Consul registration, health and KV for one project, whichever runtime placed the services.

Contract:
- Every service instance is registered on the agent at `consul_http` with ID
  `<project>-<service>`, Name = the service name, the runtime's address and port, and
  Meta {project, kind, image, runtime, config_hash, metrics_port, metrics_path}; Meta
  `project` is how `health()` and `deregister_project()` find the project's services.
- Each registration carries one real check that Consul runs itself: HTTP GET on the
  service's health path (flask, fastapi, nameko) or grpc.health.v1 (grpc). Critical
  services are never deregistered automatically, so `status` can show them.
- KV keys are relative to `shopctl/<project>/`, the prefix services read overrides from
  (shopkit.settings.kv_prefix); `_shared/...` is for settings of every service.
- A Consul that cannot be reached raises RuntimeUnavailable; an agent that answers
  with an error raises OperationFailed. Nothing else here raises ShopctlError.

Consul cannot be told to run a check now, so `probe()` performs the same check from
here (for `shopctl health`), without Consul.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

import consul
from consul.callback import CB
from consul.exceptions import ConsulException

from shopctl.errors import OperationFailed, RuntimeUnavailable
from shopctl.units import ServiceState

if TYPE_CHECKING:
    from shopctl.config import ServiceConfig

# Must equal shopkit.settings.KV_ROOT: services read their overrides under it.
KV_ROOT = "shopctl"
HTTP_KINDS = frozenset({"flask", "fastapi", "nameko"})
METRICS_PATH = "/metrics"

HealthStatus = Literal["passing", "warning", "critical"]
_SEVERITY: dict[str, int] = {"passing": 0, "warning": 1, "critical": 2}


@dataclass(frozen=True)
class CheckStatus:
    """One Consul check of a service as the agent last saw it."""

    check_id: str
    name: str
    status: str  # passing | warning | critical (maintenance shows as critical)
    output: str


@dataclass(frozen=True)
class ServiceHealth:
    """A registered service of the project: the worst of its checks, and what Consul holds."""

    service: str
    status: HealthStatus
    checks: tuple[CheckStatus, ...] = ()
    service_ids: tuple[str, ...] = ()
    address: str | None = None
    port: int | None = None
    meta: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ProbeResult:
    """The outcome of running a service's health check once, directly."""

    status: HealthStatus
    latency_ms: float
    output: str


def service_id(project: str, instance: str) -> str:
    """The Consul ID of one instance: PROJECT-SERVICE, PROJECT-SERVICE.2, ..."""
    return f"{project}-{instance}"


def go_duration(seconds: float) -> str:
    """Seconds as a Go duration Consul accepts; milliseconds keep fractions exact."""
    return f"{max(1, round(seconds * 1000))}ms"


def worst(statuses: list[str]) -> HealthStatus:
    """Consul's aggregation: any critical -> critical, else any warning -> warning.

    A status Consul may add later counts as critical: unknown must not look healthy.
    A service without checks is passing, as Consul treats it.
    """
    if not statuses:
        return "passing"
    top = max(statuses, key=lambda s: _SEVERITY.get(s, 2))
    return top if top in _SEVERITY else "critical"  # type: ignore[return-value]


def check_definition(service: ServiceConfig, address: str, port: int) -> dict[str, Any]:
    """The Consul check that fits the service's kind, reaching it at address:port."""
    health = service.health
    check: dict[str, Any] = {
        "Interval": go_duration(health.interval),
        "Timeout": go_duration(health.timeout),
    }
    if service.kind == "grpc":
        check.update(
            Name=f"{service.name} gRPC health",
            GRPC=f"{address}:{port}",
            GRPCUseTLS=False,
        )
    elif service.kind in HTTP_KINDS:
        check.update(
            Name=f"{service.name} HTTP {health.path}",
            HTTP=f"http://{address}:{port}{health.path}",
            Method="GET",
        )
    else:  # the config model rejects other kinds; this guards a model that grew one
        raise ValueError(f"no health check for service kind {service.kind!r}")
    return check


def registration(
    project: str, service: ServiceConfig, state: ServiceState, runtime: str
) -> dict[str, Any]:
    """Keyword arguments for agent.service.register (pure, so it is testable alone)."""
    address = state.address
    port = state.port or service.port
    if not address:
        raise OperationFailed(
            f"cannot register {service.name} in Consul: the {runtime} runtime reports no "
            f"address for it (state: {state.state})",
            hint=f"`shopctl logs {service.name}` shows why it is not running",
        )
    tags = list(dict.fromkeys([*service.tags, service.kind]))  # ordered, no duplicates
    meta = {
        "project": project,
        "kind": service.kind,
        "image": state.image or "",
        "runtime": runtime,
        "config_hash": state.config_hash or "",
        "metrics_port": str(state.extra.get("metrics_port") or service.metrics_port or port),
        "metrics_path": METRICS_PATH,
        "instance": state.instance,
    }
    return {
        "name": service.name,
        "service_id": service_id(project, state.instance),
        "address": address,
        "port": port,
        "tags": tags,
        "meta": meta,
        "check": check_definition(service, address, port),
        # Re-registering replaces the old check instead of adding a second one.
        "replace_existing_checks": True,
    }


TXN_OPS = 64  # Consul's limit of operations in one transaction


class Registry:
    """The project's view of one Consul agent. Thread-safe for concurrent register calls."""

    def __init__(self, consul_http: str, project: str, timeout: float = 5.0,
                 token: str | None = None):
        """`token`: the ACL token every call is made with (the project's management
        token; see shopctl.consul_acl)."""
        self.consul_http = consul_http
        self.project = project
        self.kv_root = f"{KV_ROOT}/{project}/"
        parts = urlsplit(consul_http if "://" in consul_http else f"http://{consul_http}")
        self._client = consul.Consul(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 8500,
            scheme=parts.scheme or "http",
            connections_timeout=timeout,
            token=token,
        )

    @contextmanager
    def _calling(self, what: str) -> Iterator[None]:
        """Translate client failures into errors a person can act on."""
        try:
            yield
        except ConsulException as exc:
            raise OperationFailed(f"Consul at {self.consul_http} refused to {what}: {exc}") from exc
        # requests' connection errors and timeouts are OSErrors; catching the base keeps
        # this module independent of the HTTP library py-consul happens to use.
        except OSError as exc:
            raise RuntimeUnavailable(
                f"Consul is not reachable at {self.consul_http}: start it with `shopctl up` "
                "or check infra.consul.port",
            ) from exc

    def ping(self) -> str:
        """The address of the cluster leader; raises RuntimeUnavailable without one."""
        with self._calling("report its leader"):
            leader = self._client.status.leader()
        if not leader:
            raise RuntimeUnavailable(
                f"Consul at {self.consul_http} answers but has no leader yet",
                hint="a fresh agent elects itself within seconds; try again",
            )
        return leader

    # -- services -------------------------------------------------------------------

    def register(self, service: ServiceConfig, state: ServiceState, runtime: str,
                 token: str | None = None) -> str:
        """Register (or update) one service instance with its check; returns its ID.
        `token`: the service's own ACL token, which the agent then keeps it under."""
        kwargs = registration(self.project, service, state, runtime)
        with self._calling(f"register {service.name}"):
            self._client.agent.service.register(**kwargs, token=token)
        return kwargs["service_id"]

    def deregister(self, instance: str) -> None:
        """Remove one instance (a service's first instance is named as the service) and
        its checks; an unknown one is not an error."""
        with self._calling(f"deregister {instance}"):
            try:
                self._client.agent.service.deregister(service_id(self.project, instance))
            except ConsulException as exc:
                # An unknown ID: 404 (the client returns False) or, from an agent with
                # ACLs enabled, 500 "Unknown service".
                if "Unknown service" not in str(exc):
                    raise

    def deregister_project(self) -> list[str]:
        """Remove every service whose Meta.project is this project; returns their IDs."""
        with self._calling("deregister the project's services"):
            ids = list(self._own_services())
            for sid in ids:
                self._client.agent.service.deregister(sid)
        return ids

    def _own_services(self) -> dict[str, dict[str, Any]]:
        services = self._client.agent.services() or {}
        return {
            sid: entry
            for sid, entry in services.items()
            if (entry.get("Meta") or {}).get("project") == self.project
        }

    def health(self) -> dict[str, ServiceHealth]:
        """Every registered instance of the project's services by instance name (a
        service's first instance is named as the service, the others SERVICE.N; see
        shopctl.units.instance_name), as the local agent sees it now.

        The agent's own view is used (not the catalog's) because it changes the moment a
        check runs, while the catalog lags by an anti-entropy sync. Entries sharing an
        instance name are merged; the worst check decides.
        """
        with self._calling("report service health"):
            services = self._own_services()
            checks = self._client.agent.checks() or {}
        by_service: dict[str, list[CheckStatus]] = {sid: [] for sid in services}
        for check_id, check in sorted(checks.items()):
            sid = check.get("ServiceID")
            if sid in by_service:
                by_service[sid].append(
                    CheckStatus(
                        check_id=check_id,
                        name=check.get("Name") or check_id,
                        status=check.get("Status") or "critical",
                        output=check.get("Output") or "",
                    )
                )
        result: dict[str, ServiceHealth] = {}
        prefix = f"{self.project}-"
        for sid, entry in sorted(services.items()):
            meta = entry.get("Meta") or {}
            name = meta.get("instance") or (sid[len(prefix):] if sid.startswith(prefix)
                                             else entry.get("Service") or sid)
            previous = result.get(name)
            merged = (*(previous.checks if previous else ()), *by_service[sid])
            result[name] = ServiceHealth(
                service=entry.get("Service") or name,
                status=worst([c.status for c in merged]),
                checks=merged,
                service_ids=(*(previous.service_ids if previous else ()), sid),
                address=previous.address if previous else entry.get("Address"),
                port=previous.port if previous else entry.get("Port"),
                meta=previous.meta if previous else dict(entry.get("Meta") or {}),
            )
        return result

    def passing_instances(self) -> dict[str, list[tuple[str, int]]]:
        """(address, port) of each instance of the project's services whose checks all
        pass, by service name, as the local agent sees them now."""
        with self._calling("list passing instances"):
            services = self._own_services()
            checks = self._client.agent.checks() or {}
        failing = {c.get("ServiceID") for c in checks.values() if c.get("Status") != "passing"}
        found: dict[str, list[tuple[str, int]]] = {}
        for sid, entry in sorted(services.items()):
            if sid not in failing and entry.get("Port"):
                found.setdefault(entry.get("Service") or sid, []).append(
                    (entry.get("Address") or "", int(entry["Port"])))
        return found

    def probe(self, state: ServiceState, service: ServiceConfig) -> ProbeResult:
        """Run the service's check once, now, from here (see module `probe`)."""
        return probe(state, service)

    # -- key/value --------------------------------------------------------------------

    def put_kv(self, key: str, value: str) -> None:
        with self._calling(f"store {self.kv_root}{key}"):
            if not self._client.kv.put(self.kv_root + key, value):
                raise OperationFailed(f"Consul did not store {self.kv_root}{key}")

    def put_kv_absent(self, values: Mapping[str, str]) -> list[str]:
        """Store each key of `values` that Consul does not hold; one that exists keeps its
        value. One transaction (one commit for Consul, not one a key) per TXN_OPS keys,
        each a check-and-set against "absent"; Consul rolls a transaction back whole when
        one key exists, and then the keys go one at a time. Returns the keys written."""
        written: list[str] = []
        items = list(values.items())
        for first in range(0, len(items), TXN_OPS):
            chunk = items[first:first + TXN_OPS]
            ops = [{"KV": {"Verb": "cas", "Key": self.kv_root + key, "Index": 0,
                           "Value": base64.b64encode(value.encode()).decode()}}
                   for key, value in chunk]
            with self._calling(f"store {len(chunk)} keys under {self.kv_root}"):
                try:  # py-consul's txn.put sends no token: as its kv calls do, with ours
                    self._client.http.put(CB.json(), "/v1/txn", data=json.dumps(ops),
                                          headers=self._client.prepare_headers())
                except ConsulException as exc:
                    if "index is stale" not in str(exc):  # not "a key exists": refused
                        raise
                else:
                    written += [key for key, _ in chunk]
                    continue
                for key, value in chunk:
                    if self._client.kv.put(self.kv_root + key, value, cas=0):
                        written.append(key)
        return written

    def get_kv(self, key: str) -> str | None:
        """The value of one key, or None when absent."""
        with self._calling(f"read {self.kv_root}{key}"):
            _, entry = self._client.kv.get(self.kv_root + key)
        return _decode(entry.get("Value")) if entry else None

    def kv_tree(self, prefix: str = "") -> dict[str, str]:
        """Every key under `prefix` as {key relative to the project root: value}."""
        with self._calling(f"list {self.kv_root}{prefix}"):
            _, entries = self._client.kv.get(self.kv_root + prefix, recurse=True)
        tree: dict[str, str] = {}
        for entry in entries or []:
            key = entry["Key"][len(self.kv_root):]
            if key and not key.endswith("/"):  # "folder" markers carry no setting
                tree[key] = _decode(entry.get("Value"))
        return tree

    def delete_kv(self, key: str, recurse: bool = False) -> None:
        with self._calling(f"delete {self.kv_root}{key}"):
            self._client.kv.delete(self.kv_root + key, recurse=recurse or None)

    # -- callers: passing instances by name -------------------------------------------

    def passing(self, service: str, index: str | None = None,
                wait: float | None = None) -> tuple[str | None, list[Instance]]:
        """The project's instances of `service` whose checks all pass, from Consul's
        health API (the catalog, which every agent answers alike), and the index to pass
        back for a blocking query (`wait` seconds at most) that returns once that changes.
        Instances of another project sharing the agent are left out (Meta.project)."""
        options: dict[str, Any] = {"passing": True}
        if index is not None:
            options.update(index=index, wait=go_duration(wait or 10.0))
        with self._calling(f"list passing instances of {service}"):
            found_index, nodes = self._client.health.service(service, **options)
        instances = []
        for node in nodes or []:
            entry = node.get("Service") or {}
            if (entry.get("Meta") or {}).get("project") != self.project or not entry.get("Port"):
                continue
            address = entry.get("Address") or (node.get("Node") or {}).get("Address") or ""
            instances.append(Instance(entry.get("ID") or "", address, int(entry["Port"])))
        return found_index, sorted(instances)


def _decode(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value


# -- direct probes -------------------------------------------------------------------


def probe(state: ServiceState, service: ServiceConfig, timeout: float | None = None) -> ProbeResult:
    """Perform the check Consul runs for `service` against `state`, once, from this process.

    Same target and rules as the Consul check (HTTP: 2xx passing, 429 warning, anything
    else critical; gRPC: SERVING passing), so the answer matches what Consul will say
    next. latency_ms covers the request alone, not setting up the client. Never raises
    for a failing service: failures are critical results.
    """
    limit = service.health.timeout if timeout is None else timeout
    port = state.port or service.port
    if not state.address or state.state in ("exited", "missing"):
        return ProbeResult("critical", 0.0, f"not running (state: {state.state})")
    if service.kind == "grpc":
        return _probe_grpc(f"{state.address}:{port}", limit)
    return _probe_http(f"http://{state.address}:{port}{service.health.path}", limit)


def _elapsed_ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)


def _probe_http(url: str, timeout: float) -> ProbeResult:
    # Imported here: ~0.1 s with what it pulls in, and a no-op `up` probes nothing.
    import httpx

    # Like Consul's checker: no proxy from the environment. verify=False because the URL
    # is plain HTTP, and loading a CA bundle would cost more than the request itself.
    with httpx.Client(timeout=timeout, trust_env=False, verify=False) as client:
        started = time.perf_counter()
        try:
            response = client.get(url)
        except httpx.HTTPError as exc:
            output = f"HTTP GET {url}: {type(exc).__name__}: {exc}"
            return ProbeResult("critical", _elapsed_ms(started), output)
        latency = _elapsed_ms(started)
    code = response.status_code
    status: HealthStatus = (
        "passing" if 200 <= code < 300 else "warning" if code == 429 else "critical"
    )
    body = response.text.strip()[:200]
    output = f"HTTP GET {url}: {code} {response.reason_phrase} Output: {body}"
    return ProbeResult(status, latency, output)


def _probe_grpc(target: str, timeout: float) -> ProbeResult:
    # Imported here: grpc costs ~0.1 s to import and most commands never probe.
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    # No proxy, as for HTTP: a health check must reach the service itself.
    with grpc.insecure_channel(target, options=[("grpc.enable_http_proxy", 0)]) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        started = time.perf_counter()
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
        except grpc.RpcError as exc:
            output = f"gRPC health {target}: {exc.code().name}: {exc.details()}"
            return ProbeResult("critical", _elapsed_ms(started), output)
        latency = _elapsed_ms(started)
    name = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    status: HealthStatus = "passing" if name == "SERVING" else "critical"
    return ProbeResult(status, latency, f"gRPC health {target}: {name}")


@dataclass(frozen=True, order=True)
class Instance:
    """One registered instance of a service, as callers reach it."""

    service_id: str
    address: str
    port: int
