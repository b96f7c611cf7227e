"""The infra builders (shopctl.infra, shopctl.prom) as pure functions of the config, and
the one readiness loop both runtimes wait with (shopctl.readiness), with fakes."""

from __future__ import annotations

from pathlib import Path

import pytest

from shopctl import broker, readiness
from shopctl.config import load_config
from shopctl.errors import OperationFailed
from shopctl.infra import docker as docker_infra
from shopctl.infra import local as local_infra
from shopctl.units import Readiness, Setup


def _config(tmp_path: Path, infra: str = "{}"):
    (tmp_path / "services" / "users").mkdir(parents=True, exist_ok=True)
    (tmp_path / "shop.yaml").write_text(
        f"project: unit\ninfra: {infra}\nservices:\n  users: {{kind: flask, port: 18001}}\n")
    return load_config(tmp_path / "shop.yaml")


def test_docker_units_follow_the_config_and_hash_the_same_twice(tmp_path):
    config = _config(tmp_path, "{prometheus: {enabled: true}}")
    first, again = docker_infra.units(config), docker_infra.units(config)
    assert [spec.name for spec in first] == ["consul", "rabbitmq", "promsd", "prometheus"]
    assert [s.config_hash for s in first] == [s.config_hash for s in again]
    consul = first[0]
    assert consul.files and "-config-file" in consul.command  # ACLs on by default
    assert consul.files_mode == 0o400 and consul.readiness.kind == "consul-leader"
    rabbit = first[1]
    assert rabbit.readiness.kind == "amqp-login" and rabbit.volumes == {
        "rabbitmq": "/var/lib/rabbitmq"}
    assert broker.password(config) not in repr(rabbit)  # the URIs in its check are hidden


def test_a_changed_setting_changes_only_that_units_hash(tmp_path):
    before = {s.name: s.config_hash for s in docker_infra.units(_config(tmp_path))}
    after = {s.name: s.config_hash
             for s in docker_infra.units(_config(tmp_path, "{consul: {port: 18555}}"))}
    assert after["consul"] != before["consul"] and after["rabbitmq"] == before["rabbitmq"]


def test_disabled_parts_have_no_unit(tmp_path):
    config = _config(tmp_path, "{rabbitmq: {enabled: false}}")
    assert [spec.name for spec in docker_infra.units(config)] == ["consul"]


def test_local_units_adopt_a_broker_and_keep_the_bridge_port(tmp_path, monkeypatch):
    monkeypatch.setattr(local_infra.shutil, "which", lambda name: f"/bin/{name}")
    monkeypatch.setattr(local_infra, "rabbitmq_binary", lambda: "/bin/rabbitmq-server")
    monkeypatch.setattr(local_infra, "rabbitmqctl_binary", lambda own=True: "/bin/rabbitmqctl")
    config = _config(tmp_path, "{prometheus: {enabled: true}}")
    ports = iter(range(41000, 41100))
    options = local_infra.Options(python="/bin/python3", free_port=lambda: next(ports),
                                  running_ports={"promsd": 40999})
    specs = {spec.name: spec for spec in local_infra.units(config, options)}
    assert list(specs) == ["consul", "rabbitmq", "promsd", "prometheus"]
    rabbit = specs["rabbitmq"]
    assert rabbit.adopt_readiness is not None and not rabbit.adopt_readiness.refused
    assert rabbit.setup.env["RABBITMQ_NODENAME"] == "shopctl-unit@localhost"
    assert specs["promsd"].main_port == 40999  # the running bridge's port stays
    assert b"127.0.0.1:40999" in specs["prometheus"].files[str(
        tmp_path / ".shopctl" / "local" / "data" / "_prometheus")]["prometheus.yml"]
    again = local_infra.units(config, options)
    assert [s.config_hash for s in again] == [s.config_hash for s in specs.values()]


class Fake:
    """Scripted answers for readiness.holds / answers, and a clock."""

    def __init__(self, monkeypatch, holds_after: float, answers_after: float = 0.0):
        self.now = 0.0
        monkeypatch.setattr(readiness, "holds", lambda check: self.now >= holds_after)
        monkeypatch.setattr(readiness, "answers", lambda check: self.now >= answers_after)

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


CHECK = Readiness("amqp-login", 5672, timeout=10.0)


def test_wait_runs_setup_once_it_answers_then_only_polls(monkeypatch):
    fake = Fake(monkeypatch, holds_after=3.0, answers_after=1.0)
    runs = []

    def run_step(argv, setup):
        runs.append((fake.now, argv))
        return True, ""

    setup = Setup(steps=(("ctl", "import"), ("ctl", "delete_user")), message="adding")
    said = []
    readiness.wait(CHECK, lambda: None, setup, run_step, said.append, "RabbitMQ",
                   clock=fake.clock, sleep=fake.sleep)
    assert [argv for _, argv in runs] == [("ctl", "import"), ("ctl", "delete_user")]
    assert runs[0][0] >= 1.0 and said == ["adding"]


def test_wait_retries_failed_setup_and_names_it_when_time_is_up(monkeypatch):
    fake = Fake(monkeypatch, holds_after=99.0)
    setup = Setup(steps=(("ctl", "import"),), failure="could not add the user", timeout=5.0)
    with pytest.raises(OperationFailed, match="could not add the user .refused."):
        readiness.wait(CHECK, lambda: None, setup, lambda argv, s: (False, "refused"),
                       what="RabbitMQ", clock=fake.clock, sleep=fake.sleep)
    assert 5.0 <= fake.now < 10.0


def test_wait_fails_early_when_the_unit_stops_and_late_on_timeout(monkeypatch):
    fake = Fake(monkeypatch, holds_after=99.0)
    with pytest.raises(OperationFailed, match="consul stopped while starting"):
        readiness.wait(Readiness("consul-leader", 1), lambda: "stopped while starting",
                       what="consul", hint=lambda: "last lines", clock=fake.clock,
                       sleep=fake.sleep)
    with pytest.raises(OperationFailed, match="did not become ready within 10s"):
        readiness.wait(CHECK, lambda: None, what="RabbitMQ", clock=fake.clock, sleep=fake.sleep)


def test_http_checks_answer_false_when_nothing_listens():
    from shopctl.runtime.local import free_port

    port = free_port()
    assert not readiness.http_ok(port, "/-/ready", timeout=0.2)
    assert not readiness.consul_has_leader(port, timeout=0.2)
