"""`up`'s scheduler (shopctl.orchestrate.apply_up) against a fake runtime and a fake Consul:
depends_on order, independent services at once, Consul's word as the result, clear
failures, and infra that is still booting."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import pytest

from shopctl.config import ShopConfig
from shopctl.errors import Cancelled, OperationFailed
from shopctl.orchestrate import FIRST_CHECK_INTERVAL, POLL_SECONDS, InfraStartup, apply_up
from shopctl.plan import make_plan
from shopctl.registry import registration
from shopctl.units import InfraEndpoints, LaunchSpec, ServiceState

ENDPOINTS = InfraEndpoints("http://127.0.0.1:8500", "amqp://x", "consul:8500", "amqp://y")


def shop_config(**health: dict) -> ShopConfig:
    services = {
        "users": {"kind": "flask", "path": "services/users", "port": 8001},
        "catalog": {"kind": "fastapi", "path": "services/catalog", "port": 8002,
                    "depends_on": ["users"]},
        "inventory": {"kind": "grpc", "path": "services/inventory", "port": 50051},
        "payments": {"kind": "fastapi", "path": "services/payments", "port": 8004},
        "orders": {"kind": "nameko", "path": "services/orders", "port": 8003,
                   "depends_on": ["inventory", "payments"]},
    }
    for name, settings in health.items():
        services[name]["health"] = settings
    return ShopConfig.model_validate({"project": "t", "services": services})


class Clock:
    """Fake time: sleeping advances it, and really sleeps a little so that the scheduler's
    worker threads (starts, probes) get their turn within one poll."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        time.sleep(0.005)
        self.now += seconds


@dataclass
class Health:
    status: str
    checks: tuple = ()


class FakeShop:
    """Runtime and registry in one: a service answers its own check `boot` seconds after
    it starts, and Consul says so `lag` seconds later (its check schedule)."""

    name = "fake"

    def __init__(self, clock: Clock, boot: dict[str, float] | None = None, lag: float = 1.0):
        self.clock = clock
        self.boot = boot or {}
        self.lag = lag
        self.started_at: dict[str, float] = {}
        self.registered: list[str] = []
        self.intervals: dict[str, list[float]] = {}  # the check interval of each registration
        self.events: list[str] = []
        self.stale: set[str] = set()  # passing in Consul from an instance replaced since
        self.lock = threading.Lock()

    # runtime
    def prepare(self, config, services, progress, cancel=None) -> None:
        self.events.append("prepare")

    def start_service(self, config, spec, progress) -> ServiceState:
        with self.lock:
            self.started_at[spec.service] = self.clock()
            self.events.append(f"start {spec.service}")
        return ServiceState(spec.service, "running", address="10.0.0.2", port=1)

    def logs(self, config, names, follow, tail):
        return []

    # registry
    def register(self, service, state, runtime, token=None) -> str:
        with self.lock:
            self.registered.append(service.name)
            self.intervals.setdefault(service.name, []).append(service.health.interval)
        return service.name

    def deregister(self, name: str) -> None:
        with self.lock:
            self.events.append(f"deregister {name}")
            self.stale.discard(name)
            while name in self.registered:
                self.registered.remove(name)

    def _answers_at(self, name: str) -> float | None:
        if name not in self.started_at or self.boot.get(name) is None:
            return None
        return self.started_at[name] + self.boot[name]

    def health(self) -> dict[str, Health]:
        out = {}
        for name in list(self.registered):
            at = self._answers_at(name)
            ok = at is not None and self.clock() >= at + self.lag
            # Consul keeps a check's last status across a registration under its ID.
            out[name] = Health("passing" if ok or name in self.stale else "critical")
        return out

    def probe(self, state, service):
        at = self._answers_at(service.name)
        ok = at is not None and self.clock() >= at
        return Health("passing" if ok else "critical")


def run_up(config, shop, clock, **kwargs):
    specs = {name: LaunchSpec(name, {}, "h") for name in config.services}
    plan = make_plan(config.start_order(), {n: "h" for n in config.services}, {})
    return apply_up(config, shop, shop, plan, specs, {}, clock=clock, sleep=clock.sleep,
                    **kwargs)


def test_independent_services_start_at_once_and_dependents_after_their_dependencies():
    config, clock = shop_config(), Clock()
    boot = {"users": 2.0, "catalog": 2.0, "inventory": 1.0, "payments": 3.0, "orders": 1.0}
    shop = FakeShop(clock, boot, lag=1.0)
    health = run_up(config, shop, clock)
    assert {n: h.status for n, h in health.items()} == dict.fromkeys(config.services, "passing")
    at = shop.started_at
    assert at["users"] == at["inventory"] == at["payments"] == 0.0
    # Not level by level: catalog goes once users answers (to shopctl's probe, before
    # Consul runs its check), whatever payments does.
    assert 2.0 <= at["catalog"] < 2.0 + 5 * POLL_SECONDS
    assert 3.0 <= at["orders"] < 3.0 + 5 * POLL_SECONDS
    # Done when Consul says orders passes, not when shopctl's own probe does.
    assert clock() >= at["orders"] + boot["orders"] + shop.lag


def test_only_awaited_services_are_probed_and_only_until_consul_passes_them():
    config, clock = shop_config(), Clock()
    shop = FakeShop(clock, dict.fromkeys(config.services, 1.0), lag=0.5)
    probed: list[tuple[str, float]] = []
    answer = shop.probe

    def probe(state, service):
        probed.append((service.name, clock()))
        return answer(state, service)

    shop.probe = probe
    run_up(config, shop, clock)
    assert {name for name, _ in probed} == {"users", "inventory", "payments"}
    # Consul passes them at 1.5; a probe already in flight may still finish after that.
    assert max(at for _, at in probed) < 1.5 + 3 * POLL_SECONDS


def test_a_dependency_that_never_answers_fails_naming_it_and_its_dependents_never_start():
    config, clock = shop_config(payments={"start_period": 3.0}), Clock()
    boot = {"users": 1.0, "catalog": 1.0, "inventory": 1.0, "payments": None, "orders": 1.0}
    shop = FakeShop(clock, boot)
    with pytest.raises(OperationFailed, match="payments did not become healthy within 3s"):
        run_up(config, shop, clock, timeout_extra=2.0)
    assert "orders" not in shop.started_at
    assert clock() >= 3.0 + 2.0


def test_a_no_op_up_that_consul_passes_returns_without_sleeping_or_probing():
    config, clock = shop_config(), Clock()
    shop = FakeShop(clock, dict.fromkeys(config.services, 0.0), lag=0.0)
    kept = {name: ServiceState(name, "running", address="10.0.0.2", port=1, config_hash="h")
            for name in config.services}
    for name in config.services:  # running, registered and passing since an earlier up
        shop.started_at[name] = -10.0
        shop.registered.append(name)
    slept: list[float] = []
    probed: list[str] = []
    shop.probe = lambda state, service: probed.append(service.name)
    specs = {name: LaunchSpec(name, {}, "h") for name in config.services}
    plan = make_plan(config.start_order(), {n: "h" for n in config.services}, kept)
    health = apply_up(config, shop, shop, plan, specs, kept, clock=clock, sleep=slept.append)
    assert {h.status for h in health.values()} == {"passing"}
    assert slept == [] and probed == []
    assert not [event for event in shop.events if event.startswith("start ")]
    # Registered again as they are (Consul passes them): with their own interval.
    assert {i for intervals in shop.intervals.values() for i in intervals} == {5.0}


def test_a_new_instance_is_checked_every_second_until_consul_passes_it_then_at_its_own():
    config = shop_config(users={"interval": "10s"}, payments={"interval": "500ms"})
    clock = Clock()
    shop = FakeShop(clock, dict.fromkeys(config.services, 0.5), lag=0.5)
    run_up(config, shop, clock)
    assert shop.intervals["users"] == [FIRST_CHECK_INTERVAL, 10.0]
    assert shop.intervals["catalog"] == [FIRST_CHECK_INTERVAL, 5.0]  # the default
    assert shop.intervals["payments"] == [0.5]  # already shorter: registered once


def test_settings_are_written_after_consul_answers_and_before_the_first_start():
    config, clock = shop_config(), Clock()
    shop = FakeShop(clock, dict.fromkeys(config.services, 0.5))
    consul = threading.Event()

    class Runtime(FakeShop):
        def start_infra(self, config, progress):
            return ENDPOINTS, {"consul": lambda: consul.wait(5), "rabbitmq": lambda: None}

    runtime = Runtime(clock)
    infra = InfraStartup(config, runtime)
    threading.Timer(0.05, lambda: (shop.events.append("consul"), consul.set())).start()
    run_up(config, shop, clock, infra=infra,
           before_start=lambda: shop.events.append("settings"))
    # Images are checked while Consul boots; nothing starts before the settings are in.
    assert shop.events[:3] == ["prepare", "consul", "settings"]
    assert all(event.startswith(("start ", "deregister ")) for event in shop.events[3:])


def test_up_returns_only_once_infra_answers_and_raises_its_failure():
    config, clock = shop_config(), Clock()
    broker = threading.Event()

    class Runtime(FakeShop):
        def start_infra(self, config, progress):
            return ENDPOINTS, {"rabbitmq": lambda: broker.wait(5)}

    shop = Runtime(clock, dict.fromkeys(config.services, 0.1), lag=0.0)
    infra = InfraStartup(config, shop)
    assert not infra.ready("rabbitmq") and infra.ready("consul")  # nobody waits for consul

    def sleep(seconds: float) -> None:
        clock.sleep(seconds)
        if clock() > 20:
            broker.set()

    specs = {name: LaunchSpec(name, {}, "h") for name in config.services}
    plan = make_plan(config.start_order(), {n: "h" for n in config.services}, {})
    apply_up(config, shop, shop, plan, specs, {}, infra=infra, clock=clock, sleep=sleep)
    assert clock() > 20 and infra.all_ready()

    def broken():
        raise OperationFailed("rabbitmq stopped while starting (exited)")

    class Broken(FakeShop):
        def start_infra(self, config, progress):
            return ENDPOINTS, {"rabbitmq": broken}

    failing = InfraStartup(config, Broken(clock))
    with pytest.raises(OperationFailed, match="rabbitmq stopped"):
        failing.wait("rabbitmq")


def test_infra_without_waiters_is_ready_at_once():
    class Runtime:
        name = "plain"

        def start_infra(self, config, progress):
            return ENDPOINTS, {}

    infra = InfraStartup(shop_config(), Runtime())
    assert infra.endpoints == ENDPOINTS
    assert infra.all_ready() and infra.ready("rabbitmq")


# -- the crash watch (issue 12, item 6) ---------------------------------------------------


class Watched(FakeShop):
    """A runtime that also shows each instance's state (`instance`): `script[name]` is a
    list of (seconds after its start, ServiceState fields) that apply from then on."""

    def __init__(self, clock, boot, script, lag=0.5):
        super().__init__(clock, boot, lag)
        self.script = script
        self.looked: list[str] = []

    def _now(self, name: str) -> dict:
        fields = {"state": "running", "address": "10.0.0.2", "port": 1}
        for after, change in self.script.get(name, []):
            if self.clock() >= self.started_at[name] + after:
                fields.update(change)
        return fields

    def start_service(self, config, spec, progress) -> ServiceState:
        super().start_service(config, spec, progress)
        return ServiceState(spec.service, **self._now(spec.service))

    def instance(self, config, name) -> ServiceState | None:
        self.looked.append(name)
        return ServiceState(name, **self._now(name))

    def register(self, service, state, runtime, token=None) -> str:
        registration("t", service, state, runtime)  # refuses an instance with no address
        return super().register(service, state, runtime)

    def logs(self, config, names, follow, tail):
        from shopctl.units import LogLine

        return [LogLine(n, f"{n}: RuntimeError: boom") for n in names]


CRASHING = [(0.3, {"state": "restarting", "address": None, "exit_code": 3, "crashes": 1}),
            (0.5, {"state": "running", "address": "10.0.0.2", "exit_code": None}),
            (0.8, {"state": "restarting", "address": None, "exit_code": 3, "crashes": 2})]


def test_a_service_crashing_twice_at_start_fails_up_at_once_with_its_exit_code_and_logs():
    config = shop_config(payments={"start_period": 60.0})
    clock = Clock()
    shop = Watched(clock, {"users": 0.2, "inventory": 0.2, "payments": None, "catalog": 0.2},
                   {"payments": CRASHING})
    with pytest.raises(OperationFailed) as failed:
        run_up(config, shop, clock)
    message = failed.value.message
    assert message.startswith("payments crashed while starting (exit code 3); crashed 2 times")
    assert "payments: RuntimeError: boom" in message
    assert "up and healthy: users, inventory, catalog" in message
    assert "not started: orders" in message  # it depends on payments
    assert "orders" not in shop.started_at
    assert clock() < 0.8 + 3 * POLL_SECONDS  # not the start period


def test_an_instance_that_exits_and_is_not_restarted_fails_up_at_once():
    config, clock = shop_config(), Clock()
    exits = [(0.2, {"state": "exited", "address": None, "exit_code": 0})]
    shop = Watched(clock, {"users": None}, {"users": exits})
    with pytest.raises(OperationFailed, match=r"users exited while starting \(exit code 0\) "
                                              r"and was not restarted"):
        run_up(config, shop, clock)
    assert clock() < 0.2 + 3 * POLL_SECONDS


def test_one_crash_at_start_even_before_the_first_look_is_forgiven():
    """The container crashed before start_service looked at it, so it had no address to
    register (this was "cannot register users in Consul ... (state: restarting)"); it is
    registered once it runs again, and `up` succeeds: only a second crash fails it."""
    config, clock = shop_config(), Clock()
    early = [(0.0, {"state": "restarting", "address": None, "exit_code": 1, "crashes": 1}),
             (0.3, {"state": "running", "address": "10.0.0.2", "exit_code": None})]
    shop = Watched(clock, dict.fromkeys(config.services, 0.5), {"users": early})
    health = run_up(config, shop, clock)
    assert {h.status for h in health.values()} == {"passing"}
    # Once at its address (first checks 1 s apart), once more when Consul passed it.
    assert shop.intervals["users"] == [FIRST_CHECK_INTERVAL, 5.0]


def test_crashes_of_a_kept_instance_before_this_up_do_not_count():
    config, clock = shop_config(), Clock()
    # As the local runtime shows it: the last crash's exit code stays while it runs again.
    shop = Watched(clock, dict.fromkeys(config.services, 0.0),
                   {"users": [(0.0, {"crashes": 5, "exit_code": 1})]}, lag=0.0)
    specs = {name: LaunchSpec(name, {}, "h") for name in config.services}
    kept = {"users": ServiceState("users", "running", address="10.0.0.2", port=1,
                                  config_hash="h", crashes=5, exit_code=1)}
    shop.started_at["users"] = -10.0
    plan = make_plan(config.start_order(), {n: "h" for n in config.services}, kept)
    apply_up(config, shop, shop, plan, specs, kept, clock=clock, sleep=clock.sleep)


# -- ports, before anything starts (issue 12, item 8) ---------------------------------------


class PortShop:
    """A runtime that only answers the port questions."""

    name = "fake"

    def __init__(self, infra, owners):
        self._infra = infra
        self._owners = owners

    def infra_ports(self, config):
        return self._infra

    def port_owners(self, config, ports):
        return {port: owner for port, owner in self._owners.items() if port in ports}


def listening(stack) -> int:
    import socket

    sock = stack.enter_context(socket.socket())
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock.getsockname()[1]


def port_config(ports: dict[str, int]) -> ShopConfig:
    return ShopConfig.model_validate({"project": "t", "services": {
        name: {"kind": "flask", "path": f"services/{name}", "port": port}
        for name, port in ports.items()}})


def test_ports_held_by_someone_else_are_all_named_with_setting_and_pid():
    import os
    from contextlib import ExitStack

    from shopctl.orchestrate import check_ports
    from shopctl.ports import PortNeed

    with ExitStack() as stack:
        consul, users, kept = listening(stack), listening(stack), listening(stack)
        config = port_config({"users": users, "kept": kept})
        plan = make_plan([["users", "kept"]], {"users": "h", "kept": "h"},
                         {"kept": ServiceState("kept", "running", config_hash="h")})
        runtime = PortShop([PortNeed(consul, "infra.consul.port", "consul")], {})
        with pytest.raises(OperationFailed) as failed:
            check_ports(config, runtime, plan)
    message, me = failed.value.message, os.getpid()
    assert f"port {consul} (infra.consul.port) is in use by pid {me}" in message
    assert f"port {users} (services.users.port) is in use by pid {me}" in message
    assert str(kept) not in message  # kept runs as it is: its port is not needed
    assert message.startswith("2 host ports") and message.endswith("nothing was started")


def test_ports_held_by_the_projects_own_instances_are_no_conflict():
    from contextlib import ExitStack

    from shopctl.orchestrate import check_ports
    from shopctl.ports import PortNeed

    with ExitStack() as stack:
        consul, users, other = listening(stack), listening(stack), listening(stack)
        config = port_config({"users": users, "orders": other})
        plan = make_plan([["users", "orders"]], {"users": "new", "orders": "h"}, {
            "users": ServiceState("users", "running", config_hash="old"),
            "orders": ServiceState("orders", "running", config_hash="old"),
        })
        owners = {consul: ("consul", None), users: ("users", "container t-users"),
                  other: ("orders", "container t-orders")}
        check_ports(config, PortShop([PortNeed(consul, "infra.consul.port", "consul")], owners),
                    plan)
        # The same port held by the project's own consul is a conflict for a service.
        clash = port_config({"users": consul})
        plan = make_plan([["users"]], {"users": "h"}, {})
        with pytest.raises(OperationFailed, match=rf"port {consul} \(services.users.port\) is "
                                                  r"in use by t's own consul"):
            check_ports(clash, PortShop([], owners), plan)


def test_a_cancelled_up_starts_nothing_more_and_raises_cancelled():
    """Issue 12 item 7: once the token is set (Ctrl+C), the services waiting for their
    dependencies are not started, and apply_up ends at once with Cancelled."""
    config, clock = shop_config(), Clock()
    shop = FakeShop(clock, {"users": 5.0, "catalog": 1.0, "inventory": 5.0, "payments": 5.0,
                            "orders": 1.0})
    cancel = threading.Event()

    def sleep(seconds: float) -> None:
        clock.sleep(seconds)
        if clock.now >= 1.0:
            cancel.set()

    specs = {name: LaunchSpec(name, {}, "h") for name in config.services}
    plan = make_plan(config.start_order(), {n: "h" for n in config.services}, {})
    with pytest.raises(Cancelled):
        apply_up(config, shop, shop, plan, specs, {}, clock=clock, sleep=sleep, cancel=cancel)
    assert clock.now < 1.0 + 2 * POLL_SECONDS
    assert sorted(shop.started_at) == ["inventory", "payments", "users"]  # not catalog, orders


def test_an_up_cancelled_before_it_starts_starts_nothing():
    config, clock = shop_config(), Clock()
    shop = FakeShop(clock)
    cancel = threading.Event()
    cancel.set()
    specs = {name: LaunchSpec(name, {}, "h") for name in config.services}
    plan = make_plan(config.start_order(), {n: "h" for n in config.services}, {})
    with pytest.raises(Cancelled):
        apply_up(config, shop, shop, plan, specs, {}, clock=clock, sleep=clock.sleep,
                 cancel=cancel)
    assert shop.started_at == {}


def test_a_replaced_instance_is_not_passed_on_its_predecessors_verdict():
    """Consul passes the old instance under the ID the new one registers with: `up` takes
    it out of Consul before the replacement starts, and waits for the new one's check."""
    config, clock = shop_config(), Clock()
    shop = FakeShop(clock, dict.fromkeys(config.services, 0.0), lag=0.0)
    kept = {name: ServiceState(name, "running", address="10.0.0.2", port=1, config_hash="h")
            for name in config.services}
    for name in config.services:
        shop.started_at[name] = -10.0
        shop.registered.append(name)
    shop.stale.add("payments")
    shop.boot["payments"] = 4.0  # the new code takes 4 s to answer
    observed = {**kept, "payments": ServiceState("payments", "running", address="10.0.0.2",
                                                 port=1, config_hash="old")}
    specs = {name: LaunchSpec(name, {}, "h") for name in config.services}
    plan = make_plan(config.start_order(), {n: "h" for n in config.services}, observed)
    assert [s.service for s in plan.changes] == ["payments"]
    apply_up(config, shop, shop, plan, specs, observed, clock=clock, sleep=clock.sleep)
    assert shop.events.index("deregister payments") < shop.events.index("start payments")
    assert clock() >= 4.0
    others = [e for e in shop.events if e.startswith("deregister ") and e != "deregister payments"]
    assert not others
