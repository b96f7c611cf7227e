"""`up` and `down`: plan, then apply, across a runtime and the Consul registry.

Nothing here prints. Progress goes through a callback; failures are raised as
ShopctlError subclasses carrying what the user needs (the failing service, its last
log lines, the failing check's output).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from shopctl.config import ShopConfig
from shopctl.errors import OperationFailed
from shopctl.launch import launch_spec
from shopctl.plan import Action, Plan, make_plan
from shopctl.runtime.base import (
    InfraEndpoints,
    LaunchSpec,
    Progress,
    Runtime,
    ServiceState,
    no_progress,
)

POLL_SECONDS = 0.1  # between looks at the local Consul agent (and probes) while waiting


@dataclass
class UpResult:
    runtime: str
    plan: Plan
    applied: bool
    health: Mapping[str, object] = field(default_factory=dict)
    seconds: float = 0.0


def with_dependencies(config: ShopConfig, names: list[str] | None) -> list[str]:
    """The services asked for plus everything they depend on, transitively."""
    if not names:
        return list(config.services)
    wanted: list[str] = []
    for name in names:
        config.service(name)  # raises UsageError with a did-you-mean hint when unknown
    stack = list(names)
    while stack:
        name = stack.pop()
        if name in wanted:
            continue
        wanted.append(name)
        stack.extend(config.services[name].depends_on)
    return [name for name in config.services if name in wanted]


def planned_specs(
    config: ShopConfig, runtime: Runtime, infra: InfraEndpoints, secret: str, targets: list[str]
) -> dict[str, LaunchSpec]:
    return {name: launch_spec(config, name, infra, secret, runtime.name) for name in targets}


def plan_up(
    config: ShopConfig, runtime: Runtime, specs: Mapping[str, LaunchSpec]
) -> tuple[Plan, dict[str, ServiceState]]:
    observed = runtime.observe(config)
    hashes = {name: spec.config_hash for name, spec in specs.items()}
    return make_plan(config.start_order(), hashes, observed), observed


class InfraStartup:
    """The project's infra, started; each part's readiness awaited in the background.

    A runtime with `start_infra` (docker) returns as soon as the containers run, with a
    blocking waiter per part; each waiter runs here in a daemon thread (so an `up` that
    fails meanwhile exits at once instead of waiting out the infra timeout). A runtime
    with only `ensure_infra` is ready when the constructor returns.
    """

    def __init__(self, config: ShopConfig, runtime: Runtime, progress: Progress = no_progress):
        self._done: dict[str, threading.Event] = {}
        self._errors: dict[str, BaseException] = {}
        start = getattr(runtime, "start_infra", None)
        if start is None:
            self.endpoints: InfraEndpoints = runtime.ensure_infra(config, progress)
            return
        self.endpoints, waiters = start(config, progress)
        for part, waiter in waiters.items():
            done = self._done[part] = threading.Event()
            threading.Thread(
                target=self._wait_one, args=(part, waiter, done), name=f"shopctl-infra-{part}",
                daemon=True,
            ).start()

    def _wait_one(self, part: str, waiter: Callable[[], None], done: threading.Event) -> None:
        try:
            waiter()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            self._errors[part] = exc
        finally:
            done.set()

    def ready(self, part: str) -> bool:
        """Whether `part` answers (True for parts nobody waits for); raises its failure."""
        done = self._done.get(part)
        if done is None or not done.is_set():
            return done is None
        if part in self._errors:
            raise self._errors[part]
        return True

    def all_ready(self) -> bool:
        return all([self.ready(part) for part in self._done])

    def wait(self, part: str) -> None:
        """Block until `part` answers; raises its failure (the waiter has its own timeout)."""
        done = self._done.get(part)
        if done is not None:
            done.wait()
        self.ready(part)


def apply_up(
    config: ShopConfig,
    runtime: Runtime,
    registry,
    plan: Plan,
    specs: Mapping[str, LaunchSpec],
    observed: Mapping[str, ServiceState],
    progress: Progress = no_progress,
    timeout_extra: float = 30.0,
    infra: InfraStartup | None = None,
    before_start: Callable[[], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, object]:
    """Start each planned service as soon as what it needs is there, register it, and
    wait until every planned service's Consul checks pass (and all infra answers).

    A service starts once every service it depends_on is healthy; services independent
    of each other start in parallel, whatever their level. RabbitMQ may still be
    booting: a Nameko service waits for its broker itself (shopkit.amqp), and cannot
    pass its check before it connects. "Healthy" for this gate means the service's check
    passes, in Consul or when shopctl performs the same check itself (`registry.probe`),
    whichever comes first: Consul runs a new check after a random pause of up to one
    interval. The result is still Consul's: this returns only when every planned
    service passes there. `before_start` runs once Consul answers, before any service
    starts (Shop.up writes the KV settings the services read when they start).
    """
    changed = [step.service for step in plan.changes]
    if changed:
        runtime.prepare(config, changed, progress)
    if infra is not None:
        infra.wait("consul")
    if before_start is not None:
        before_start()
    steps = {step.service: step for step in plan.steps}
    needs = {name: [d for d in config.services[name].depends_on if d in steps] for name in steps}
    awaited = {dep for deps in needs.values() for dep in deps}  # others wait for these
    pending = dict(steps)  # not started yet
    starting: dict[str, Future] = {}
    started: dict[str, ServiceState] = {}
    probes: dict[str, Future] = {}
    answered: set[str] = set()  # passed shopctl's own probe of their check
    deadlines: dict[str, float] = {}
    reported: dict[str, str] = {}

    def report(name: str, message: str) -> None:
        if reported.get(name) != message:
            reported[name] = message
            progress(name, message)

    pool = ThreadPoolExecutor(max_workers=max(1, len(steps) + len(awaited)),
                              thread_name_prefix="shopctl-up")
    try:
        while True:
            infra_ready = infra is None or infra.all_ready()  # raises an infra failure
            passing: set[str] = set()
            health: Mapping[str, object] = {}
            if started:
                health = registry.health()
                for name in started:
                    status = getattr(health.get(name), "status", "critical")
                    report(name, "healthy" if status == "passing" else f"check {status}")
                    if status == "passing":
                        passing.add(name)
            for name in list(pending):
                blockers = [d for d in needs[name] if d not in passing and d not in answered]
                if blockers:
                    report(name, f"waiting for {', '.join(blockers)}")
                    continue
                step = pending.pop(name)
                grace = config.services[name].health.start_period + timeout_extra
                deadlines[name] = clock() + grace
                starting[name] = pool.submit(_apply_step, config, runtime, registry, step.action,
                                             specs[name], observed.get(name), progress)
            for name, future in list(starting.items()):
                if future.done():
                    del starting[name]
                    started[name] = future.result()  # a failed start raises here
                    reported[name] = "registered, waiting for checks"
            for name in (awaited & started.keys()) - passing - answered:
                future = probes.pop(name, None)
                if future is None:
                    probes[name] = pool.submit(_probe_passes, config, registry, started[name])
                elif not future.done():
                    probes[name] = future
                elif future.result():
                    answered.add(name)
            if infra_ready and not pending and not starting and passing >= steps.keys():
                return dict(health)
            late = [name for name in started if name not in passing and clock() > deadlines[name]]
            if late:
                raise unhealthy_error(config, runtime, health, late)
            sleep(POLL_SECONDS)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _probe_passes(config: ShopConfig, registry, state: ServiceState) -> bool:
    try:
        return registry.probe(state, config.services[state.service]).status == "passing"
    except Exception:  # noqa: BLE001 - a probe that cannot run says "not yet"; Consul decides
        return False


def _apply_step(config, runtime, registry, action, spec, current, progress) -> ServiceState:
    name = spec.service
    if action is Action.NOOP and current is not None:
        registry.register(config.services[name], current, runtime.name)
        progress(name, "unchanged")
        return current
    progress(name, {Action.CREATE: "starting", Action.RECREATE: "replacing",
                    Action.START: "restarting"}[action])
    state = runtime.start_service(config, spec, progress)
    registry.register(config.services[name], state, runtime.name)
    progress(name, "registered, waiting for checks")
    return state


def unhealthy_error(
    config: ShopConfig, runtime: Runtime, health, names: list[str]
) -> OperationFailed:
    parts = []
    for name in names:
        entry = health.get(name)
        outputs = [f"    {c.name}: {c.status}: {(c.output or '').strip()[:300]}"
                   for c in getattr(entry, "checks", [])] or ["    not registered in Consul"]
        try:
            lines = [line.text for line in runtime.logs(config, [name], follow=False, tail=15)]
        except Exception as exc:  # logs are a courtesy here; the health failure is the news
            lines = [f"(logs unavailable: {exc})"]
        parts.append(
            f"{name} did not become healthy within "
            f"{config.services[name].health.start_period:.0f}s + grace\n  checks:\n"
            + "\n".join(outputs)
            + "\n  last log lines:\n" + "\n".join(f"    {t}" for t in lines[-15:])
        )
    return OperationFailed(
        "\n".join(parts),
        hint="fix the service and run `shopctl up` again; `shopctl logs SERVICE` shows more",
    )


def push_settings(config: ShopConfig, registry, jwt_secret: str, targets: list[str]) -> None:
    """Put the token secret and each service's `config:` block into Consul KV.

    The secret is always written (services that lack SHOP_JWT_SECRET read it there).
    Settings are written only where absent, so what an operator changed at run time
    survives the next `up`; `shopctl config push` is the way to overwrite them.
    """
    registry.put_kv("_shared/jwt_secret", jwt_secret)
    present = registry.kv_tree()
    for name in targets:
        for key, value in config.services[name].config.items():
            path = f"{name}/{key}"
            if path not in present:
                registry.put_kv(path, value if isinstance(value, str) else json.dumps(value))
