"""Fault knobs of the simulated provider, and the Consul KV watcher that sets them.

Knobs (all validated, see `parse_knobs`):
    failure_rate  float 0..1   share of provider calls that fail (nothing is charged)
    latency_ms    int 0..60000 delay added to every provider response
    decline       bool         the provider declines every charge

Who wins. Knobs start from Consul KV > environment > default (`config.py`). At run time
they can be changed by `PUT /admin/faults` and by editing the KV keys
`shopctl/<project>/<service>/<knob>`. The last change wins: the watcher applies a knob
only when its KV value differs from what it saw at the previous poll, so an admin
change stays in force until someone edits that KV key. Deleting a key leaves the knob
as it is; an invalid KV value is logged and ignored.

Failures are drawn from a seeded RNG, so a test run is repeatable, and rates 0.0 and
1.0 are exact (never / always).
"""

from __future__ import annotations

import logging
import math
import random
import threading
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace

log = logging.getLogger(__name__)

MAX_LATENCY_MS = 60_000
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


class KnobError(ValueError):
    """A knob name or value was rejected; the message says which and why."""


@dataclass(frozen=True)
class Knobs:
    failure_rate: float = 0.0
    latency_ms: int = 0
    decline: bool = False

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _rate(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise KnobError("failure_rate must be a number between 0 and 1")
    try:
        rate = float(value)
    except ValueError:
        raise KnobError("failure_rate must be a number between 0 and 1") from None
    if math.isnan(rate) or not 0.0 <= rate <= 1.0:
        raise KnobError("failure_rate must be a number between 0 and 1")
    return rate


def _latency(value: object) -> int:
    message = f"latency_ms must be a whole number between 0 and {MAX_LATENCY_MS}"
    if isinstance(value, bool):
        raise KnobError(message)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise KnobError(message) from None
    if not isinstance(value, int) or not 0 <= value <= MAX_LATENCY_MS:
        raise KnobError(message)
    return value


def _flag(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise KnobError("decline must be true or false")


_PARSERS: dict[str, Callable[[object], object]] = {
    "failure_rate": _rate,
    "latency_ms": _latency,
    "decline": _flag,
}
KNOB_NAMES = tuple(_PARSERS)


def parse_knobs(raw: Mapping[str, object]) -> dict[str, object]:
    """Validate a partial set of knobs, from JSON values or KV strings alike."""
    unknown = sorted(set(raw) - set(_PARSERS))
    if unknown:
        raise KnobError(f"unknown knob(s) {', '.join(unknown)}; known: {', '.join(KNOB_NAMES)}")
    return {name: _PARSERS[name](value) for name, value in raw.items()}


class FaultStore:
    """The current knobs, shared by the provider, the admin endpoint and the watcher."""

    def __init__(self, knobs: Knobs, seed: int):
        self._lock = threading.Lock()
        self._knobs = knobs
        self._rng = random.Random(seed)

    def current(self) -> Knobs:
        with self._lock:
            return self._knobs

    def update(self, changes: Mapping[str, object], source: str) -> Knobs:
        """Apply validated `changes` (see `parse_knobs`) and return the knobs in force."""
        parsed = parse_knobs(changes)
        with self._lock:
            self._knobs = replace(self._knobs, **parsed)
            knobs = self._knobs
        if parsed:
            log.info("fault knobs changed", extra={"source": source, "changes": parsed})
        return knobs

    def roll_failure(self) -> bool:
        """Whether the next provider call fails. random() is in [0, 1): 0.0 never, 1.0 always."""
        with self._lock:
            return self._rng.random() < self._knobs.failure_rate


class KvWatcher:
    """Polls the service's KV folder and applies knobs whose KV value changed.

    `read` returns the folder as {key: value} ({} when Consul is unreachable, as
    shopkit.settings.read_kv does); keys that are not knobs are ignored.
    """

    def __init__(self, store: FaultStore, read: Callable[[], Mapping[str, str]],
                 interval_s: float):
        self._store = store
        self._read = read
        self._interval = interval_s
        self._seen: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Take the current KV values as the baseline (they were applied at start-up
        through config.py) and poll from then on in a daemon thread."""
        self._seen = self._knob_values()
        self._thread = threading.Thread(target=self._run, name="kv-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def poll_once(self) -> None:
        """Apply every knob whose KV value changed since the previous poll."""
        values = self._knob_values()
        # A deleted key is forgotten, so re-creating it counts as a change.
        self._seen = {k: v for k, v in self._seen.items() if k in values}
        for name, value in values.items():
            if self._seen.get(name) == value:
                continue
            self._seen[name] = value
            try:
                self._store.update({name: value}, source="consul")
            except KnobError as exc:
                log.warning("ignored invalid KV knob", extra={"knob": name, "error": str(exc)})

    def _knob_values(self) -> dict[str, str]:
        return {k: v for k, v in self._read().items() if k in KNOB_NAMES}

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.poll_once()
            except Exception:  # a bad poll must not kill the watcher for good
                log.exception("kv poll failed")
