"""The step actions behind the "SERVICE.ACTION" names of a saga definition.

An action is looked up by the service's KIND (from the definition snapshot) and the
action name, so a saga step names what it does and the registry decides how to speak to
that kind of service: Nameko RPC, gRPC or HTTP.

Contract of every action
    action(clients, call) -> dict       the JSON-able result, merged into the saga's
                                        context for the steps after it
    raises StepFailure                  with `retryable` saying whether the same call may
                                        succeed later (timeouts, 503, UNAVAILABLE, broker
                                        down) or never will (declined, out of stock,
                                        InvalidOrder)
Every call is idempotent through `call.key`, derived from saga id + step + phase, so the
engine may repeat any call after a timeout or a crash: the orders service gets it as
`idempotency_key`, payments as the Idempotency-Key header, inventory keys on the order
id (itself unique per saga). Every call carries `call.timeout` as the client's own
deadline, so no step waits forever and a late reply is dropped by the client.
"""

from __future__ import annotations

import importlib.util
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from shopctl.saga.endpoints import Endpoints


class StepFailure(Exception):
    """A step action failed; `retryable` decides between retrying and compensating."""

    def __init__(self, message: str, *, retryable: bool, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.code = code

    def to_dict(self) -> dict[str, Any]:
        return {"message": self.message, "retryable": self.retryable, "code": self.code}


def step_key(saga_id: str, step: str, phase: str = "forward") -> str:
    """The idempotency key of one step's calls: the same on every retry and resume."""
    return f"saga-{saga_id}-{step}" + ("" if phase == "forward" else f"-{phase}")


@dataclass(frozen=True)
class StepCall:
    """What an action gets: who calls, with which key, and the saga's context so far
    (the input plus the results of the forward steps that succeeded)."""

    saga_id: str
    step: str
    phase: str  # "forward" or "compensate"
    timeout: float
    context: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None  # why the saga compensates (compensations only)

    @property
    def key(self) -> str:
        return step_key(self.saga_id, self.step, self.phase)

    @property
    def forward_key(self) -> str:
        return step_key(self.saga_id, self.step)


Action = Callable[["Clients", StepCall], dict[str, Any]]
ADAPTERS: dict[tuple[str, str], Action] = {}


def adapter(kind: str, action: str) -> Callable[[Action], Action]:
    def register(func: Action) -> Action:
        ADAPTERS[(kind, action)] = func
        return func

    return register


class ServiceActions:
    """Runs "SERVICE.ACTION" calls against the live services (the engine's default)."""

    def __init__(self, endpoints: Endpoints, kinds: dict[str, str]):
        self.clients = Clients(endpoints)
        self.kinds = kinds

    def resolve(self, call: str) -> Action:
        service, _, action = call.partition(".")
        kind = self.kinds.get(service)
        try:
            return ADAPTERS[(kind, action)]
        except KeyError:
            known = ", ".join(f"{k}.{a}" for k, a in sorted(ADAPTERS))
            raise StepFailure(f"no action {action!r} for {service} (kind {kind}); "
                              f"known: {known}", retryable=False, code="UNKNOWN_ACTION") from None

    def run(self, call: str, step_call: StepCall) -> dict[str, Any]:
        return self.resolve(call)(self.clients, step_call)

    def close(self) -> None:
        self.clients.close()


# -- clients -----------------------------------------------------------------------------

class Clients:
    """Connections opened on first use and shared by the steps of a process."""

    def __init__(self, endpoints: Endpoints):
        self.endpoints = endpoints
        self._lock = threading.Lock()
        self._rpcs: dict[float, Any] = {}
        self._http = None
        self._channel = None
        self._stubs: tuple[ModuleType, Any] | None = None

    def rpc(self, timeout: float):
        """A NamekoRpc whose timeout is the step's (one client per distinct timeout,
        since the client's timeout is fixed at construction)."""
        from shopctl.nameko_rpc import NamekoRpc

        with self._lock:
            if timeout not in self._rpcs:
                self._rpcs[timeout] = NamekoRpc(self.endpoints.orders_amqp, timeout=timeout,
                                                client_name="shopctl-saga")
            return self._rpcs[timeout]

    def http(self):
        """An httpcore connection pool (keep-alive), used by the HTTP adapters."""
        import httpcore

        with self._lock:
            if self._http is None:
                self._http = httpcore.ConnectionPool()
            return self._http

    def inventory(self) -> tuple[ModuleType, Any]:
        """(inventory_pb2, InventoryStub) on a channel to the inventory server."""
        import grpc

        with self._lock:
            if self._stubs is None:
                pb2, pb2_grpc = load_inventory_stubs()
                self._channel = grpc.insecure_channel(self.endpoints.inventory)
                self._stubs = (pb2, pb2_grpc.InventoryStub(self._channel))
            return self._stubs

    def close(self) -> None:
        for rpc in self._rpcs.values():
            rpc.close()
        if self._http is not None:
            self._http.close()
        if self._channel is not None:
            self._channel.close()


_REPO_SERVICES = Path(__file__).resolve().parents[2] / "services"


def load_inventory_stubs(service_dir: Path = _REPO_SERVICES / "inventory"):
    """The service's own generated stubs, through its protogen.load_stubs (imported by
    path under a private name, so no copy of the generation lives here)."""
    name = "_shopctl_inventory_protogen"
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, service_dir / "protogen.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[name] = module
    return module.load_stubs()


# The adapters live in their own modules; importing them fills ADAPTERS.
from shopctl.saga import adapters  # noqa: E402, F401
