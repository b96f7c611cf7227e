"""The provider as the payment logic sees it: behind a circuit breaker and a timeout.

Breaker (pybreaker): closed -> open after `fail_max` consecutive failed calls (an
error or a timeout; a declined card is an answer, not a failure). While open, calls
fail fast with `Unavailable` and never reach the provider. `reset_timeout` seconds
after opening it is half-open: the next call is let through, and its success closes
the breaker while its failure opens it again.

pybreaker moves open -> half-open lazily, on the next call. `state()` reports the
state that call will see (half_open once the timeout has elapsed), so the gauge, the
503 bodies and the admin view tell the truth without a call having to happen first.

Metrics:
    shop_breaker_state{service, breaker="provider"}         0 closed, 1 open, 2 half_open
                                                            (shopkit's breaker gauge)
    shop_payments_provider_calls_total{service, operation, outcome}   calls that reached
        the provider; outcome ok | error | timeout
    shop_payments_fallbacks_total{service, reason}          calls answered with
        Unavailable; reason breaker_open | provider_error | provider_timeout
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TypeVar

import pybreaker
from prometheus_client import Counter
from provider import ProviderCharge, ProviderError, SimulatedProvider
from shopkit.metrics import export_breaker

log = logging.getLogger(__name__)

T = TypeVar("T")

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
# Unavailable.reason values
BREAKER_OPEN = "breaker_open"
PROVIDER_ERROR = "provider_error"
PROVIDER_TIMEOUT = "provider_timeout"
_FROM_PYBREAKER = {
    pybreaker.STATE_CLOSED: CLOSED,
    pybreaker.STATE_OPEN: OPEN,
    pybreaker.STATE_HALF_OPEN: HALF_OPEN,
}

# The `breaker` label of this breaker in shop_breaker_state.
BREAKER_LABEL = "provider"
PROVIDER_CALLS = Counter(
    "shop_payments_provider_calls_total",
    "Calls that reached the payment provider, by operation and outcome.",
    ["service", "operation", "outcome"],
)
FALLBACKS = Counter(
    "shop_payments_fallbacks_total",
    "Provider calls answered with the 'unavailable' fallback, by reason.",
    ["service", "reason"],
)

# Threads running provider calls. Calls are serialised by the breaker's lock, so more
# than one is busy only while timed-out calls are still waiting out their latency.
_WORKERS = 8


class ProviderTimeout(Exception):
    """The provider did not answer in time; the call may or may not have taken effect."""


class Unavailable(Exception):
    """The provider could not be used; `reason` says why, `breaker` is the state after."""

    def __init__(self, reason: str, breaker: str):
        super().__init__(f"payment provider unavailable ({reason}), breaker {breaker}")
        self.reason = reason
        self.breaker = breaker


class _StateListener(pybreaker.CircuitBreakerListener):
    """Logs transitions and remembers when the breaker last opened."""

    def __init__(self) -> None:
        self.opened_at: float | None = None

    def state_change(self, cb, old_state, new_state) -> None:
        if new_state.name == pybreaker.STATE_OPEN:
            self.opened_at = time.monotonic()
        log.info(
            "breaker state changed",
            extra={"old": _FROM_PYBREAKER.get(old_state.name) if old_state else None,
                   "new": _FROM_PYBREAKER[new_state.name]},
        )


class GuardedProvider:
    """SimulatedProvider's operations, each through the breaker with a timeout.

    Every method raises `Unavailable` instead of the provider's failures.
    """

    def __init__(self, provider: SimulatedProvider, service: str, fail_max: int,
                 reset_timeout_s: float, timeout_s: float):
        self._provider = provider
        self._service = service
        self._timeout = timeout_s
        self._listener = _StateListener()
        # throw_new_error_on_trip=False: the call that trips the breaker reports its own
        # error, so CircuitBreakerError only ever means "rejected without calling".
        self._breaker = pybreaker.CircuitBreaker(
            fail_max=fail_max, reset_timeout=reset_timeout_s, name=f"{service}-provider",
            listeners=[self._listener], throw_new_error_on_trip=False,
        )
        self._pool = ThreadPoolExecutor(max_workers=_WORKERS, thread_name_prefix="provider")
        # Computed at scrape time; a later app in the same process (tests) rebinds it.
        export_breaker(service, BREAKER_LABEL, self.state)

    @property
    def fail_max(self) -> int:
        return self._breaker.fail_max

    @property
    def reset_timeout_s(self) -> float:
        return self._breaker.reset_timeout

    @property
    def failures(self) -> int:
        """Consecutive failures counted towards opening the breaker."""
        return self._breaker.fail_counter

    def state(self) -> str:
        """closed | open | half_open, as the next call will find it."""
        state = _FROM_PYBREAKER[self._breaker.current_state]
        opened_at = self._listener.opened_at
        if (state == OPEN and opened_at is not None
                and time.monotonic() - opened_at >= self._breaker.reset_timeout):
            return HALF_OPEN
        return state

    def charge(self, token: str, amount_cents: int, currency: str) -> ProviderCharge:
        return self._call("charge", self._provider.charge, token, amount_cents, currency)

    def find(self, token: str) -> ProviderCharge | None:
        return self._call("find", self._provider.find, token)

    def refund(self, token: str) -> ProviderCharge:
        return self._call("refund", self._provider.refund, token)

    def close(self) -> None:
        """Stop taking calls; timed-out calls still running are left to finish."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _call(self, operation: str, fn: Callable[..., T], *args) -> T:
        try:
            return self._breaker.call(self._attempt, operation, fn, *args)
        except pybreaker.CircuitBreakerError:
            reason = BREAKER_OPEN
        except ProviderTimeout:
            reason = PROVIDER_TIMEOUT
        except ProviderError:
            reason = PROVIDER_ERROR
        FALLBACKS.labels(self._service, reason).inc()
        raise Unavailable(reason, self.state())

    def _attempt(self, operation: str, fn: Callable[..., T], *args) -> T:
        """One call that reaches the provider (the breaker runs this only when it lets
        the call through), bounded by the timeout."""
        future = self._pool.submit(fn, *args)
        try:
            result = future.result(timeout=self._timeout)
        except FutureTimeout:
            # Not started yet (every worker busy): cancel it, so it cannot take effect
            # after the caller was told "unavailable".
            future.cancel()
            self._count(operation, "timeout")
            raise ProviderTimeout(f"no answer within {self._timeout:.3f}s") from None
        except Exception:
            self._count(operation, "error")
            raise
        self._count(operation, "ok")
        return result

    def _count(self, operation: str, outcome: str) -> None:
        PROVIDER_CALLS.labels(self._service, operation, outcome).inc()

