"""shopkit.discovery's pure parts: the balancer's turns and suspects, Consul's answer
read for one project, and which calls may be repeated on another instance."""

from __future__ import annotations

from collections import Counter

from shopkit.discovery import Balancer, Discovery, passing_addresses

A, B, C = "10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


def test_calls_go_in_turn_over_the_passing_instances_and_avoid_a_suspect():
    clock = Clock()
    balancer = Balancer(lambda name: [C, A, B], suspect_for=5.0, clock=clock)

    even = Counter(balancer.pick("svc") for _ in range(9))
    balancer.suspect("svc", A)
    avoided = {balancer.pick("svc") for _ in range(6)}
    clock.now += 5.1

    assert even == {A: 3, B: 3, C: 3}
    assert avoided == {B, C}
    assert {balancer.pick("svc") for _ in range(6)} == {A, B, C}


def test_the_retry_goes_elsewhere_or_nowhere():
    balancer = Balancer(lambda name: [A, B])

    assert {balancer.pick("svc", avoid=[A]) for _ in range(3)} == {B}
    assert balancer.pick("svc", avoid=[A, B]) is None


def test_consul_down_keeps_its_last_answer_and_never_an_answer_means_no_instance():
    clock, answers = Clock(), [[A], None]
    balancer = Balancer(lambda name: answers.pop(0) if answers else None, clock=clock)

    first = balancer.pick("svc")
    clock.now += 1.1

    assert first == A and balancer.pick("svc") == A
    assert Discovery(None).pick("svc") is None  # no CONSUL_HTTP_ADDR, nothing known


def test_only_the_projects_instances_with_a_port_are_read_from_consul():
    entries = [
        {"Node": {"Address": "10.0.0.9"}, "Service": {"Address": "10.0.0.1", "Port": 80,
                                                      "Meta": {"project": "shop"}}},
        {"Node": {"Address": "10.0.0.9"}, "Service": {"Address": "", "Port": 81,
                                                      "Meta": {"project": "shop"}}},
        {"Node": {"Address": "10.0.0.9"}, "Service": {"Address": "10.0.0.5", "Port": 80,
                                                      "Meta": {"project": "other"}}},
        {"Node": {"Address": "10.0.0.9"}, "Service": {"Address": "10.0.0.6", "Port": 0,
                                                      "Meta": {"project": "shop"}}},
    ]

    assert passing_addresses(entries, "shop") == ["10.0.0.1:80", "10.0.0.9:81"]
    assert len(passing_addresses(entries, None)) == 3


def test_discovery_reads_its_consul_and_token_from_the_environment(tmp_path):
    (tmp_path / "consul_token").write_text("svc-token")
    found = Discovery.from_env({"CONSUL_HTTP_ADDR": "127.0.0.1:8500", "SHOP_PROJECT": "p",
                                "SHOP_SECRETS_DIR": str(tmp_path)})

    assert (found.consul, found.project, found.token) == ("http://127.0.0.1:8500", "p",
                                                          "svc-token")
