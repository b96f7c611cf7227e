"""Which instance of a service the saga calls next.

Contract:
- `pick(service, avoid)` returns "host:port" of one instance, spreading calls round-robin
  over the service's passing instances; None when no instance outside `avoid` is known.
- The passing instances come from `lookup(service)` (Consul's health API) and are kept
  for `ttl` seconds. `lookup` returns None when Consul cannot be asked: the last list
  Consul gave is kept then, else `fallback` (shop.yaml's 127.0.0.1:<port>) is used. An
  empty answer (Consul knows no passing instance) also falls back to shop.yaml's port,
  as `discover` always did. Without `lookup`, `fallback` is all there is (Endpoints.of).
- `suspect(service, address)` after a connection failure, a 503 or UNAVAILABLE: calls
  avoid that instance for `suspect_for` seconds, or until Consul stops listing it (then it
  is trusted again the moment Consul lists it anew). When every instance is suspect they
  are all tried anyway: a call that may fail beats a call never made.
- Thread-safe: sagas run in threads. One thread refreshes a stale list while the others
  go on with the stale one; only a service never resolved makes callers wait.

Why a short TTL rather than Consul's blocking queries: a blocking query needs a watcher
thread per service and a lifecycle for it in every process that calls, while a saga
session may be short. A dead instance stays "passing" in Consul until its check fails
(an interval, 5 s by default) whichever way Consul is read, so the gap is covered by
`suspect` and the immediate retry on another instance, not by a faster Consul read. One
health query per service a second costs Consul nothing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

TTL = 1.0  # how long a list of passing instances is used before asking Consul again
SUSPECT_FOR = 5.0  # how long an instance that failed a call is avoided
UNREACHABLE_FOR = 5.0  # how long Consul is not asked again after it could not be asked

Lookup = Callable[[str], "list[str] | None"]


@dataclass
class _Service:
    addresses: tuple[str, ...] = ()
    from_consul: bool = False
    fresh_until: float = float("-inf")
    turn: int = 0
    refreshing: threading.Lock = field(default_factory=threading.Lock)


class Resolver:
    def __init__(self, fallback: Mapping[str, Iterable[str]], lookup: Lookup | None = None,
                 ttl: float = TTL, suspect_for: float = SUSPECT_FOR,
                 clock: Callable[[], float] = time.monotonic):
        self.fallback = {name: tuple(addrs) for name, addrs in fallback.items()}
        self.lookup = lookup
        self.ttl = ttl
        self.suspect_for = suspect_for
        self.clock = clock
        self._lock = threading.Lock()
        self._services: dict[str, _Service] = {}
        self._suspects: dict[tuple[str, str], float] = {}  # (service, address) -> until

    def pick(self, service: str, avoid: Iterable[str] = ()) -> str | None:
        addresses = self.addresses(service)
        avoid = set(avoid)
        now = self.clock()
        with self._lock:
            candidates = [a for a in addresses if a not in avoid]
            trusted = [a for a in candidates
                       if self._suspects.get((service, a), float("-inf")) <= now]
            pool = trusted or candidates
            if not pool:
                return None
            entry = self._services.setdefault(service, _Service())
            entry.turn += 1
            return pool[entry.turn % len(pool)]

    def suspect(self, service: str, address: str) -> None:
        with self._lock:
            now = self.clock()
            self._suspects = {k: v for k, v in self._suspects.items() if v > now}
            self._suspects[(service, address)] = now + self.suspect_for

    def addresses(self, service: str) -> tuple[str, ...]:
        """The instances calls to `service` spread over now (refreshed when stale)."""
        if self.lookup is None:
            return self.fallback.get(service, ())
        with self._lock:
            entry = self._services.setdefault(service, _Service())
            stale = self.clock() >= entry.fresh_until
            known = entry.addresses
        if stale and entry.refreshing.acquire(blocking=not known):
            try:
                if self.clock() >= entry.fresh_until:  # another thread may have just done it
                    self._refresh(service, entry)
            finally:
                entry.refreshing.release()
        return entry.addresses

    def _refresh(self, service: str, entry: _Service) -> None:
        found = self.lookup(service) if self.lookup is not None else None
        now = self.clock()
        with self._lock:
            if found is None:  # Consul cannot be asked: keep what it said last
                entry.fresh_until = now + max(self.ttl, UNREACHABLE_FOR)
                if not entry.from_consul:
                    entry.addresses = self.fallback.get(service, ())
                return
            entry.fresh_until = now + self.ttl
            listed = set(found)
            for key in [k for k in self._suspects if k[0] == service and k[1] not in listed]:
                del self._suspects[key]  # Consul caught up: trusted when listed again
            entry.from_consul = bool(found)
            entry.addresses = tuple(sorted(found)) or self.fallback.get(service, ())
