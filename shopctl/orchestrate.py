"""`up` and `down`: plan, then apply, across a runtime and the Consul registry.

Nothing here prints. Progress goes through a callback; failures are raised as
ShopctlError subclasses carrying what the user needs (the failing service, its last
log lines, the failing check's output).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
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

POLL_SECONDS = 0.5


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


def apply_up(
    config: ShopConfig,
    runtime: Runtime,
    registry,
    plan: Plan,
    specs: Mapping[str, LaunchSpec],
    observed: Mapping[str, ServiceState],
    progress: Progress = no_progress,
    timeout_extra: float = 30.0,
) -> dict[str, object]:
    """Start level by level (a level's services in parallel), register each service,
    and wait until every planned service's Consul checks pass."""
    changed = [step.service for step in plan.changes]
    if changed:
        runtime.prepare(config, changed, progress)
    for level in plan.levels:
        with ThreadPoolExecutor(max_workers=max(1, len(level))) as pool:
            futures = {
                step.service: pool.submit(_apply_step, config, runtime, registry, step.action,
                                          specs[step.service], observed.get(step.service), progress)
                for step in level
            }
        errors = {}
        for name, future in futures.items():
            exc = future.exception()
            if exc is not None:
                errors[name] = exc
        if errors:
            raise next(iter(errors.values()))
        if any(step.action is not Action.NOOP for step in level):
            wait_healthy(config, runtime, registry, [s.service for s in level], progress, timeout_extra)
    return wait_healthy(config, runtime, registry, [s.service for s in plan.steps], progress, timeout_extra)


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


def wait_healthy(
    config: ShopConfig,
    runtime: Runtime,
    registry,
    names: list[str],
    progress: Progress = no_progress,
    timeout_extra: float = 30.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, object]:
    start = clock()
    deadlines = {n: start + config.services[n].health.start_period + timeout_extra for n in names}
    reported: dict[str, str] = {}
    while True:
        health = registry.health()
        pending = []
        for name in names:
            status = getattr(health.get(name), "status", "critical")
            if reported.get(name) != status:
                progress(name, "healthy" if status == "passing" else f"check {status}")
                reported[name] = status
            if status != "passing":
                pending.append(name)
        if not pending:
            return health
        late = [name for name in pending if clock() > deadlines[name]]
        if late:
            raise unhealthy_error(config, runtime, health, late)
        sleep(POLL_SECONDS)


def unhealthy_error(config: ShopConfig, runtime: Runtime, health, names: list[str]) -> OperationFailed:
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
