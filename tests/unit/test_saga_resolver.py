"""The saga's resolver: round-robin over Consul's passing instances, suspects avoided,
shop.yaml's address when Consul cannot say; driven by a scripted Consul and clock."""

from __future__ import annotations

import threading
from collections import Counter

from shopctl.saga.endpoints import Endpoints
from shopctl.saga.resolver import UNREACHABLE_FOR, Resolver

A, B, C = "10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"
DECLARED = {"svc": ["127.0.0.1:8000"]}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Consul:
    """Answers from `passing` (None: unreachable) and counts the questions."""

    def __init__(self, passing: list[str] | None) -> None:
        self.passing = passing
        self.asked = 0

    def __call__(self, service: str) -> list[str] | None:
        self.asked += 1
        return None if self.passing is None or service != "svc" else list(self.passing)


def test_calls_go_round_robin_over_every_passing_instance():
    resolver = Resolver(DECLARED, Consul([C, A, B]), clock=Clock())

    picks = [resolver.pick("svc") for _ in range(9)]

    assert Counter(picks) == {A: 3, B: 3, C: 3}
    assert len(set(picks[:3])) == 3


def test_consul_is_asked_again_only_after_the_ttl():
    clock, consul = Clock(), Consul([A, B])
    resolver = Resolver(DECLARED, consul, ttl=1.0, clock=clock)

    for _ in range(50):
        resolver.pick("svc")
    clock.now += 0.5
    resolver.pick("svc")
    asked_within_ttl = consul.asked
    consul.passing = [B]
    clock.now += 0.6

    assert asked_within_ttl == 1
    assert {resolver.pick("svc") for _ in range(4)} == {B}
    assert consul.asked == 2


def test_a_suspect_instance_is_avoided_until_its_time_is_up():
    clock = Clock()
    resolver = Resolver(DECLARED, Consul([A, B, C]), suspect_for=5.0, ttl=1000, clock=clock)

    resolver.suspect("svc", A)
    while_suspect = {resolver.pick("svc") for _ in range(10)}
    clock.now += 5.1

    assert while_suspect == {B, C}
    assert {resolver.pick("svc") for _ in range(10)} == {A, B, C}


def test_a_suspect_consul_dropped_is_trusted_when_consul_lists_it_again():
    clock, consul = Clock(), Consul([A, B])
    resolver = Resolver(DECLARED, consul, suspect_for=60.0, ttl=1.0, clock=clock)
    resolver.pick("svc")
    resolver.suspect("svc", A)
    consul.passing = [B]
    clock.now += 1.1
    resolver.pick("svc")  # Consul has caught up: A is critical
    consul.passing = [A, B]  # ... and passing again, well before 60 s
    clock.now += 1.1

    assert {resolver.pick("svc") for _ in range(4)} == {A, B}


def test_the_retry_goes_elsewhere_and_there_is_none_for_a_single_instance():
    resolver = Resolver(DECLARED, Consul([A, B]), clock=Clock())
    single = Resolver(DECLARED, Consul([A]), clock=Clock())

    assert {resolver.pick("svc", avoid=[A]) for _ in range(4)} == {B}
    assert single.pick("svc", avoid=[A]) is None


def test_when_every_instance_is_suspect_they_are_all_tried_anyway():
    resolver = Resolver(DECLARED, Consul([A, B]), clock=Clock())
    resolver.suspect("svc", A)
    resolver.suspect("svc", B)

    assert {resolver.pick("svc") for _ in range(4)} == {A, B}
    assert resolver.pick("svc", avoid=[A]) == B


def test_shop_yaml_address_when_consul_is_unreachable_or_knows_no_instance():
    down = Resolver(DECLARED, Consul(None), clock=Clock())
    empty = Resolver(DECLARED, Consul([]), clock=Clock())

    assert down.pick("svc") == "127.0.0.1:8000"
    assert empty.pick("svc") == "127.0.0.1:8000"
    assert down.pick("unknown") is None


def test_consul_going_away_keeps_its_last_answer_and_is_not_asked_on_every_call():
    clock, consul = Clock(), Consul([A, B])
    resolver = Resolver(DECLARED, consul, ttl=1.0, clock=clock)
    resolver.pick("svc")
    consul.passing = None
    clock.now += 1.1

    picks = {resolver.pick("svc") for _ in range(20)}
    asked = consul.asked
    clock.now += UNREACHABLE_FOR - 0.5
    resolver.pick("svc")

    assert picks == {A, B}
    assert asked == consul.asked == 2


def test_endpoints_by_hand_have_no_consul_and_refuse_an_unknown_service():
    endpoints = Endpoints.of(shipping="127.0.0.1:8010")

    assert endpoints.address("shipping") == "127.0.0.1:8010"
    assert endpoints.pick("shipping", avoid=["127.0.0.1:8010"]) is None
    assert Endpoints(**endpoints.to_dict()).address("shipping") == "127.0.0.1:8010"
    try:
        endpoints.address("labels")
    except Exception as exc:  # UsageError, named by the service
        assert "labels" in str(exc)
    else:
        raise AssertionError("an unknown service has an address")


def test_replaced_addresses_are_the_ones_called():
    import dataclasses

    endpoints = Endpoints({"svc": [A]}, None, Consul(None))
    moved = dataclasses.replace(endpoints, addresses={"svc": [B]})

    assert (endpoints.address("svc"), moved.address("svc")) == (A, B)


def test_concurrent_callers_share_one_lookup_and_spread_evenly():
    gate = threading.Event()

    class SlowConsul(Consul):
        def __call__(self, service):
            gate.wait(5)
            return super().__call__(service)

    consul = SlowConsul([A, B, C])
    resolver = Resolver(DECLARED, consul, ttl=1000)
    picks: list[str] = []
    lock = threading.Lock()

    def call():
        for _ in range(30):
            got = resolver.pick("svc")
            with lock:
                picks.append(got)

    threads = [threading.Thread(target=call) for _ in range(16)]
    for thread in threads:
        thread.start()
    gate.set()
    for thread in threads:
        thread.join()

    assert consul.asked == 1
    assert Counter(picks) == {A: 160, B: 160, C: 160}
