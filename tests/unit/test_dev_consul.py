"""After a reload the instance answers its check; `shopctl dev` then waits for Consul
to pass it. A Consul check that caught the process down while it restarted would pass
it again only one whole interval later (5 s by default): dev has it checked every
second until Consul passes it, then at its own interval again."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from shopctl import dev
from shopctl.config import load_config
from shopctl.registry import ServiceHealth
from shopctl.units import ServiceState

NAME = "tea-urn"


class FakeRegistry:
    def __init__(self, statuses: list[str]):
        self.statuses = statuses  # what each look at Consul says, the last one repeated
        self.intervals: list[float] = []  # of each registration, in order

    def health(self):
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        return {NAME: ServiceHealth(NAME, status)}

    def register(self, service, state, runtime, token=None):
        self.intervals.append(service.health.interval)
        return f"p-{state.instance}"


@pytest.fixture
def loop(tmp_path, monkeypatch):
    (tmp_path / "services" / NAME).mkdir(parents=True)
    (tmp_path / "shop.yaml").write_text(
        f"project: p\nservices:\n  {NAME}: {{kind: fastapi, port: 8100}}\n")
    config = load_config(tmp_path / "shop.yaml")
    assert config.services[NAME].health.interval == 5.0  # the default
    clock = SimpleNamespace(now=0.0)
    monkeypatch.setattr(dev, "time", SimpleNamespace(
        monotonic=lambda: clock.now, sleep=lambda s: setattr(clock, "now", clock.now + s)))
    monkeypatch.setattr("shopctl.orchestrate.service_token", lambda config, name: None)
    shop = SimpleNamespace(config=config, runtime=SimpleNamespace(name="docker"))
    made = dev.DevLoop(shop, [NAME], lambda result: None)
    made.clock = clock

    def with_consul(statuses: list[str]) -> FakeRegistry:
        registry = FakeRegistry(statuses)
        monkeypatch.setattr("shopctl.consul_acl.registry", lambda config: registry)
        return registry

    made.with_consul = with_consul
    return made


STATE = ServiceState(NAME, "running", address="10.0.0.5", port=8100)


def test_consul_that_caught_the_restart_checks_every_second_until_it_passes(loop):
    registry = loop.with_consul(["critical", "critical", "critical", "passing"])

    assert loop._await_consul(NAME, STATE, STATE) == (True, None)

    assert registry.intervals == [1.0, 5.0]  # checked every second, then as configured
    assert loop.clock.now == pytest.approx(0.3)  # three looks at Consul, 0.1 s apart


def test_consul_that_still_passes_it_is_left_alone(loop):
    registry = loop.with_consul(["passing"])

    assert loop._await_consul(NAME, STATE, STATE) == (True, None)

    assert registry.intervals == [] and loop.clock.now == 0.0


def test_an_instance_at_a_new_address_is_registered_there(loop):
    registry = loop.with_consul(["passing"])
    moved = ServiceState(NAME, "running", address="10.0.0.9", port=8100)

    assert loop._await_consul(NAME, STATE, moved) == (True, None)

    assert registry.intervals == [5.0]  # Consul passed it: no short interval needed


def test_consul_that_never_passes_it_fails_the_reload_and_its_interval_is_restored(loop):
    registry = loop.with_consul(["critical"])

    ok, error = loop._await_consul(NAME, STATE, STATE)

    assert (ok, error) == (False, "it answers, but Consul does not pass it")
    assert registry.intervals == [1.0, 5.0]
    assert loop.clock.now >= dev.CONSUL_GRACE + 5.0
