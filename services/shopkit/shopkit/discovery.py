"""Calling another service by its name: Consul says where, calls spread over instances.

A service never holds another's host:port. It asks Consul's health API (with its own
ACL token, which may read the catalog) for the passing instances of a service NAME, keeps
the answer for `ttl` seconds, spreads calls over them in turn, and when an instance does
not take a call (connection refused or reset, connect timeout, HTTP 503, gRPC
UNAVAILABLE) marks it suspect for `suspect_for` seconds (or until Consul stops listing
it) and tries an idempotent call once more, at once, on another instance.

    found = Discovery.from_env()                      # CONSUL_HTTP_ADDR, SHOP_PROJECT
    with ServiceClient(found, caller=Caller(service_key(senv), senv.service)) as http:
        r = http.request("POST", "payments", "/saga/charge", json=body,
                         idempotency_key=key, scope="charge")
    grpc_calls = GrpcCalls(found)
    reply = grpc_calls.call("inventory", lambda channel: Stub(channel).Reserve(
        request, timeout=2, metadata=[("idempotency-key", key)]))

Only an idempotent call is tried twice: GET, HEAD, PUT, DELETE, OPTIONS, or any call
made with an idempotency key (the callee then does its work once). A read timeout is
never retried here: the instance is alive, and the same call at once elsewhere doubles
the load that made it slow.

When Consul cannot be asked, the last answer it gave is used; with none, NoInstance is
raised (there is no fixed address to fall back on). httpx and grpc are imported when
first used: a service needs them in its own requirements to call that way.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from shopkit.settings import consul_token

log = logging.getLogger(__name__)

TTL = 1.0
SUSPECT_FOR = 5.0
UNREACHABLE_FOR = 5.0
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
IDEMPOTENCY_HEADER = "Idempotency-Key"

T = TypeVar("T")
Lookup = Callable[[str], "list[str] | None"]


class NoInstance(Exception):
    """No instance of the service is known: none passes in Consul, or Consul was never
    reachable."""


class Balancer:
    """Round-robin over each service's instances with suspects avoided (pure logic; the
    instances come from `lookup(name)`, None when it cannot answer). Thread-safe."""

    def __init__(self, lookup: Lookup, ttl: float = TTL, suspect_for: float = SUSPECT_FOR,
                 clock: Callable[[], float] = time.monotonic):
        self.lookup = lookup
        self.ttl = ttl
        self.suspect_for = suspect_for
        self.clock = clock
        self._lock = threading.Lock()
        self._known: dict[str, tuple[str, ...]] = {}
        self._fresh_until: dict[str, float] = {}
        self._turn: dict[str, int] = {}
        self._refreshing: dict[str, threading.Lock] = {}
        self._suspects: dict[tuple[str, str], float] = {}

    def pick(self, service: str, avoid: Iterable[str] = ()) -> str | None:
        """An instance ("host:port") of `service` not in `avoid`, the next in turn among
        those not suspect (all of them when every one is); None when there is none."""
        addresses = self.instances(service)
        avoid = set(avoid)
        now = self.clock()
        with self._lock:
            candidates = [a for a in addresses if a not in avoid]
            trusted = [a for a in candidates
                       if self._suspects.get((service, a), float("-inf")) <= now]
            pool = trusted or candidates
            if not pool:
                return None
            self._turn[service] = turn = self._turn.get(service, 0) + 1
            return pool[turn % len(pool)]

    def suspect(self, service: str, address: str) -> None:
        with self._lock:
            now = self.clock()
            self._suspects = {k: v for k, v in self._suspects.items() if v > now}
            self._suspects[(service, address)] = now + self.suspect_for

    def instances(self, service: str) -> tuple[str, ...]:
        """The instances calls spread over now: Consul's answer, asked again once stale
        (by one thread; the others go on with the stale answer meanwhile)."""
        with self._lock:
            known = self._known.get(service, ())
            stale = self.clock() >= self._fresh_until.get(service, float("-inf"))
            refreshing = self._refreshing.setdefault(service, threading.Lock())
        if stale and refreshing.acquire(blocking=not known):
            try:
                if self.clock() >= self._fresh_until.get(service, float("-inf")):
                    self._refresh(service)
            finally:
                refreshing.release()
        with self._lock:
            return self._known.get(service, ())

    def _refresh(self, service: str) -> None:
        found = self.lookup(service)
        with self._lock:
            now = self.clock()
            if found is None:  # keep what Consul said last; do not ask on every call
                self._fresh_until[service] = now + max(self.ttl, UNREACHABLE_FOR)
                return
            self._fresh_until[service] = now + self.ttl
            self._known[service] = tuple(sorted(found))
            listed = set(found)
            for key in [k for k in self._suspects if k[0] == service and k[1] not in listed]:
                del self._suspects[key]  # Consul caught up: trusted when listed again


class Discovery(Balancer):
    """Balancer over Consul's health API: `/v1/health/service/<name>?passing`, the
    project's instances only (Meta.project)."""

    def __init__(self, consul_addr: str | None, project: str | None = None,
                 token: str | None = None, timeout: float = 1.0, **options: Any):
        super().__init__(self._ask_consul, **options)
        base = consul_addr or ""
        self.consul = (base if "://" in base else f"http://{base}").rstrip("/") if base else None
        self.project = project
        self.token = token
        self.timeout = timeout
        # Consul is on the host's loopback or the shop's network: never through a proxy.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **options: Any) -> Discovery:
        """CONSUL_HTTP_ADDR, SHOP_PROJECT and the service's own Consul token."""
        env = os.environ if environ is None else environ
        return cls(env.get("CONSUL_HTTP_ADDR") or None, env.get("SHOP_PROJECT"),
                   consul_token(env), **options)

    def address(self, service: str, avoid: Iterable[str] = ()) -> str:
        """Like pick, but raises NoInstance instead of returning None."""
        found = self.pick(service, avoid)
        if found is None:
            raise NoInstance(f"no passing instance of {service!r} in Consul"
                             + ("" if self.consul else " (CONSUL_HTTP_ADDR is not set)"))
        return found

    def _ask_consul(self, service: str) -> list[str] | None:
        if not self.consul:
            return None
        url = f"{self.consul}/v1/health/service/{urllib.parse.quote(service, safe='')}?passing=1"
        request = urllib.request.Request(url)
        if self.token:
            request.add_header("X-Consul-Token", self.token)
        try:
            with self._opener.open(request, timeout=self.timeout) as resp:
                entries = json.load(resp)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            log.warning("consul unreachable for discovery",
                        extra={"service": service, "error": str(exc)})
            return None
        return passing_addresses(entries, self.project)


def passing_addresses(entries: list[dict] | None, project: str | None) -> list[str]:
    """host:port of each entry of a /v1/health/service answer (of `project`, if given)."""
    found = []
    for entry in entries or []:
        svc = entry.get("Service") or {}
        if project and (svc.get("Meta") or {}).get("project") != project:
            continue
        host = svc.get("Address") or (entry.get("Node") or {}).get("Address")
        if host and svc.get("Port"):
            found.append(f"{host}:{svc['Port']}")
    return found


# -- HTTP -------------------------------------------------------------------------------


class ServiceClient:
    """An httpx client that calls services by name. `caller`: a shopkit.service_auth.
    Caller, whose credential for (service, scope) each call carries when `scope` is
    given. Thread-safe (httpx.Client is)."""

    def __init__(self, discovery: Balancer, caller=None, timeout: float = 5.0,
                 client=None):
        import httpx

        self.discovery = discovery
        self.caller = caller
        self._http = client or httpx.Client(timeout=timeout, trust_env=False)

    def request(self, method: str, service: str, path: str, *,
                idempotency_key: str | None = None, scope: str | None = None,
                headers: Mapping[str, str] | None = None, **kwargs: Any):
        """Send the request to an instance of `service`; an idempotent request that the
        instance did not take goes once more to another. Returns the httpx.Response
        (a 503 from both is returned as such); raises NoInstance, or httpx's error when
        the last instance tried could not be reached."""
        import httpx

        method = method.upper()
        sent = dict(headers or {})
        if idempotency_key is not None:
            sent[IDEMPOTENCY_HEADER] = idempotency_key
        if self.caller is not None and scope is not None:
            sent.update(self.caller.headers(service, scope))
        may_repeat = method in IDEMPOTENT_METHODS or idempotency_key is not None
        tried: list[str] = []
        address = _first(self.discovery, service)
        while True:
            try:
                response = self._http.request(method, f"http://{address}{path}",
                                              headers=sent, **kwargs)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.ReadError,
                    httpx.WriteError, httpx.RemoteProtocolError):
                address = _elsewhere(self.discovery, service, address, tried, may_repeat)
                if address is None:
                    raise
                continue
            if response.status_code == 503:
                other = _elsewhere(self.discovery, service, address, tried, may_repeat)
                if other is not None:
                    address = other
                    continue
            return response

    def get(self, service: str, path: str, **kwargs: Any):
        return self.request("GET", service, path, **kwargs)

    def post(self, service: str, path: str, **kwargs: Any):
        return self.request("POST", service, path, **kwargs)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ServiceClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- gRPC -------------------------------------------------------------------------------


class GrpcCalls:
    """gRPC calls to services by name, over one channel per instance."""

    def __init__(self, discovery: Balancer, options: list[tuple[str, Any]] | None = None):
        self.discovery = discovery
        self.options = [("grpc.enable_http_proxy", 0), *(options or [])]
        self._lock = threading.Lock()
        self._channels: dict[str, Any] = {}

    def channel(self, address: str):
        import grpc

        with self._lock:
            if address not in self._channels:
                self._channels[address] = grpc.insecure_channel(address, options=self.options)
            return self._channels[address]

    def call(self, service: str, invoke: Callable[[Any], T], idempotent: bool = True) -> T:
        """invoke(channel) on an instance of `service`; when it raises UNAVAILABLE and
        the call is idempotent (send its idempotency-key metadata), once more on
        another instance. Other errors, and the second UNAVAILABLE, propagate."""
        import grpc

        tried: list[str] = []
        address = _first(self.discovery, service)
        while True:
            try:
                return invoke(self.channel(address))
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
                address = _elsewhere(self.discovery, service, address, tried, idempotent)
                if address is None:
                    raise

    def close(self) -> None:
        with self._lock:
            for channel in self._channels.values():
                channel.close()
            self._channels.clear()


def _first(discovery: Balancer, service: str) -> str:
    found = discovery.pick(service)
    if found is None:
        raise NoInstance(f"no passing instance of {service!r} in Consul")
    return found


def _elsewhere(discovery: Balancer, service: str, failed: str, tried: list[str],
               may_repeat: bool) -> str | None:
    """Mark `failed` suspect; the instance to repeat the call on at once, or None (not
    idempotent, already repeated once, or no other instance)."""
    discovery.suspect(service, failed)
    tried.append(failed)
    if not may_repeat or len(tried) > 1:
        return None
    return discovery.pick(service, avoid=tried)
