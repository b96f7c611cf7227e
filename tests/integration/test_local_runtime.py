"""LocalRuntime end to end: a real Consul, the real users service, real signals, real /proc.

Every test project gets its own folder and free ports, so nothing here meets a shop
that is already running on this machine.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from shopctl import broker, consul_acl
from shopctl.config import ShopConfig, load_config
from shopctl.errors import OperationFailed
from shopctl.infra.local import rabbitmq_env, rabbitmqctl_binary
from shopctl.launch import launch_spec
from shopctl.ports import is_port_free
from shopctl.runtime.local import (
    UNIT_CONSUL,
    UNIT_RABBITMQ,
    LocalRuntime,
    amqp_answers,
    free_port,
    marked_pids,
)
from shopctl.state import ProjectState
from shopctl.testing import wait_for
from shopctl.units import LaunchSpec

REPO = Path(__file__).resolve().parents[2]
USERS = REPO / "services" / "users"

pytestmark = [
    pytest.mark.consul,
    pytest.mark.skipif(shutil.which("consul") is None, reason="consul binary not installed"),
]


def running(pid: int | str | None) -> bool:
    if pid is None:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def processes_mentioning(text: str) -> list[int]:
    """Live pids whose command line or environment mentions `text` (e.g. a state dir)."""
    needle = text.encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            blob = (entry / "cmdline").read_bytes() + (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in blob and running(entry.name):
            found.append(int(entry.name))
    return found


def healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def make_project(
    tmp_path: Path, rabbitmq: bool = False, amqp_port: int | None = None
) -> ShopConfig:
    crashy = tmp_path / "services" / "crashy"
    crashy.mkdir(parents=True)
    (crashy / "main.py").write_text("import sys\nprint('boom', flush=True)\nsys.exit(3)\n")
    (tmp_path / "shop.yaml").write_text(
        f"project: lt{uuid.uuid4().hex[:8]}\n"
        "infra:\n"
        f"  consul: {{port: {free_port()}}}\n"
        f"  rabbitmq: {{enabled: {str(rabbitmq).lower()}, port: {amqp_port or free_port()}}}\n"
        "services:\n"
        f"  users: {{kind: flask, path: {USERS}, port: {free_port()},\n"
        "          health: {interval: 300ms, timeout: 1s}}\n"
        f"  crashy: {{kind: fastapi, port: {free_port()}}}\n"
    )
    return load_config(tmp_path / "shop.yaml")


@pytest.fixture
def project(tmp_path) -> Iterator[tuple[ShopConfig, LocalRuntime]]:
    config = make_project(tmp_path)
    runtime = LocalRuntime(grace=5.0)
    yield config, runtime
    runtime.down(config, volumes=True)


def spec_for(config: ShopConfig, runtime: LocalRuntime, name: str) -> LaunchSpec:
    infra = runtime.ensure_infra(config)
    return launch_spec(config, name, infra, ProjectState(config.root).jwt_secret(), runtime.name)


def record(config: ShopConfig, unit: str) -> dict:
    return json.loads(ProjectState(config.root).run_file(unit).read_text())


def test_users_runs_registers_and_is_restarted_after_kill_9(project):
    config, runtime = project
    users = config.services["users"]
    news: list[tuple[str, str]] = []
    infra = runtime.ensure_infra(config, lambda s, m: news.append((s, m)))
    assert infra.consul_http == f"http://127.0.0.1:{config.infra.consul.port}"
    assert ("consul", "ready") in news

    spec = spec_for(config, runtime, "users")
    state = runtime.start_service(config, spec)
    assert state.state == "running" and state.address == "127.0.0.1" and state.port == users.port
    assert state.config_hash == spec.config_hash
    wait_for(lambda: healthy(users.port), what="users /health")

    consul_acl.ensure(config, infra.consul_http, ["users"])  # what up does before starting
    registry = consul_acl.registry(config, infra.consul_http)
    registry.register(users, state, runtime.name, token=consul_acl.service_token(config, "users"))
    wait_for(lambda: getattr(registry.health().get("users"), "status", None) == "passing",
             what="Consul passing")

    first_child = int(state.instance_id)
    os.kill(first_child, signal.SIGKILL)
    wait_for(lambda: runtime.observe(config)["users"].restarts == 1
             and runtime.observe(config)["users"].state == "running", what="restart")
    after = runtime.observe(config)["users"]
    assert after.instance_id != str(first_child) and after.exit_code == 137
    wait_for(lambda: healthy(users.port), what="users /health after restart")
    log = [line.text for line in runtime.logs(config, ["users"], follow=False, tail=None)]
    assert "[shopctl] killed by SIGKILL (exit 137); restarting in 0.5s" in log
    assert any('"msg": "listening"' in line for line in log), "the service's own output"


def test_killing_the_supervisor_leaves_an_exited_service_and_no_child(project):
    config, runtime = project
    state = runtime.start_service(config, spec_for(config, runtime, "users"))
    child = state.instance_id
    os.kill(int(state.extra["supervisor_pid"]), signal.SIGKILL)
    wait_for(lambda: runtime.observe(config)["users"].state == "exited", 5, "exited")
    wait_for(lambda: not running(child), 5, "child gone with its supervisor")
    assert runtime.observe(config)["users"].instance_id is None

    again = runtime.start_service(config, spec_for(config, runtime, "users"))
    assert again.state == "running"
    wait_for(lambda: healthy(config.services["users"].port), what="users back")


def test_start_replaces_the_running_instance(project):
    config, runtime = project
    spec = spec_for(config, runtime, "users")
    old = runtime.start_service(config, spec)
    changed = LaunchSpec(spec.service, {**spec.env, "ACCESS_TOKEN_TTL": "60"}, "newhash")
    new = runtime.start_service(config, changed)
    assert new.extra["supervisor_pid"] != old.extra["supervisor_pid"]
    assert not running(old.instance_id) and not running(old.extra["supervisor_pid"])
    assert runtime.observe(config)["users"].config_hash == "newhash"
    spec_file = ProjectState(config.root).spec_file("users")
    assert json.loads(spec_file.read_text())["env"]["ACCESS_TOKEN_TTL"] == "60"
    assert oct(spec_file.stat().st_mode & 0o777) == "0o600", "the spec holds the jwt secret"


def test_a_crashing_service_is_restarted_with_backoff(project):
    config, runtime = project
    runtime.start_service(config, spec_for(config, runtime, "crashy"))
    wait_for(lambda: runtime.observe(config)["crashy"].restarts >= 2, 10, "two restarts")
    state = runtime.observe(config)["crashy"]
    assert state.state in ("running", "restarting") and state.exit_code == 3
    texts = [line.text for line in runtime.logs(config, ["crashy"], follow=False, tail=None)]
    assert texts.count("boom") >= 2
    runtime.stop_service(config, "crashy")
    assert "crashy" not in runtime.observe(config)


def test_port_held_by_another_process_is_refused_with_its_holder(project):
    config, runtime = project
    port = config.services["users"].port
    code = (
        "import socket,time\ns=socket.socket()\n"
        f"s.bind(('127.0.0.1',{port})); s.listen(); print('ok', flush=True); time.sleep(60)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ok"
        with pytest.raises(OperationFailed) as caught:
            runtime.start_service(config, spec_for(config, runtime, "users"))
        message = str(caught.value)
        assert f"port {port} (services.users.port) is in use by pid {holder.pid}" in message
        assert "users" not in runtime.observe(config)
    finally:
        holder.kill()
        holder.wait()


def test_prepare_names_a_service_without_main_py(project, tmp_path):
    config, runtime = project
    (tmp_path / "services" / "crashy" / "main.py").unlink()
    with pytest.raises(OperationFailed, match="crashy"):
        runtime.prepare(config, ["users", "crashy"])
    runtime.prepare(config, ["users"])


def test_ensure_infra_reuses_its_consul(project):
    config, runtime = project
    assert runtime.infra_endpoints(config) is None
    runtime.ensure_infra(config)
    first = record(config, UNIT_CONSUL)["supervisor_pid"]
    news: list[tuple[str, str]] = []
    runtime.ensure_infra(config, lambda s, m: news.append((s, m)))
    assert record(config, UNIT_CONSUL)["supervisor_pid"] == first
    assert ("consul", f"running on :{config.infra.consul.port}") in news
    assert runtime.infra_endpoints(config) is not None
    assert runtime.observe_units(config, "infra")["consul"].state == "running"
    assert runtime.observe(config) == {}, "infra is not a service"


def test_settings_go_into_an_acl_consul_in_one_transaction_with_the_management_token(project):
    """Consul's transaction endpoint checks the token like every other: with ACLs on
    (default deny), shopctl's registry sends its own."""
    from shopctl.registry import Registry

    config, runtime = project
    infra = runtime.ensure_infra(config)
    registry = consul_acl.registry(config, infra.consul_http)
    first = {"users/issuer": "front-desk", "users/rounds": "12", "users/realm": "lobby"}
    assert sorted(registry.put_kv_absent(first)) == sorted(first)
    entries = httpx.get(
        f"{infra.consul_http}/v1/kv/{registry.kv_root}users/", params={"recurse": "true"},
        headers={"X-Consul-Token": ProjectState(config.root).consul_token(consul_acl.MANAGEMENT)},
    ).json()
    assert len({entry["ModifyIndex"] for entry in entries}) == 1  # one commit, not three
    registry.put_kv("users/token_ttl", "60")  # a value set at run time stays
    wanted = {"users/token_ttl": "30", "users/issuer": "other", "users/seats": "4"}
    assert registry.put_kv_absent(wanted) == ["users/seats"]
    assert registry.kv_tree("users/") == {**first, "users/token_ttl": "60", "users/seats": "4"}
    anonymous = Registry(infra.consul_http, config.project)
    with pytest.raises(OperationFailed, match="refused"):
        anonymous.put_kv_absent({"users/other": "1"})
    assert "users/other" not in registry.kv_tree("users/")


def test_down_leaves_no_process_and_keeps_data_unless_asked(tmp_path):
    config = make_project(tmp_path)
    runtime = LocalRuntime(grace=5.0)
    ps = ProjectState(config.root)
    try:
        runtime.start_service(config, spec_for(config, runtime, "users"))
        runtime.start_service(config, spec_for(config, runtime, "crashy"))
        (ps.data_dir("users") / "keep.txt").write_text("data")
        assert processes_mentioning(str(ps.dir))

        runtime.down(config, volumes=False)
        assert processes_mentioning(str(ps.dir)) == []
        assert marked_pids(ps.dir) == []
        assert list(ps.run_dir.iterdir()) == []
        assert runtime.observe(config) == {}
        assert (ps.data_dir("users") / "keep.txt").read_text() == "data"
        assert is_port_free("127.0.0.1", config.infra.consul.port)
        assert is_port_free("127.0.0.1", config.services["users"].port)
        assert ps.log_file("users").exists(), "logs stay for a post-mortem"

        runtime.down(config, volumes=True)
        assert not ps.data_root.exists()
    finally:
        runtime.down(config, volumes=True)


@pytest.mark.rabbitmq
def test_a_broker_answering_amqp_is_reused(tmp_path):
    if not amqp_answers(5672):
        pytest.skip("no broker answers on :5672 (make engines)")
    config = make_project(tmp_path, rabbitmq=True, amqp_port=5672)
    runtime = LocalRuntime()
    news: list[tuple[str, str]] = []
    try:
        infra = runtime.ensure_infra(config, lambda s, m: news.append((s, m)))
        assert ("rabbitmq", "reusing the broker already answering AMQP on :5672") in news
        assert infra.amqp_uri == broker.uri(config, "127.0.0.1", 5672)
        assert broker.logs_in(infra.amqp_uri)  # the project's user, added to that broker
        assert not ProjectState(config.root).run_file(UNIT_RABBITMQ).exists()
    finally:
        runtime.down(config, volumes=True)
        subprocess.run(["rabbitmqctl", "delete_user", broker.user(config)],
                       capture_output=True, timeout=60)
    assert amqp_answers(5672), "down never stops a broker it did not start"


@pytest.mark.rabbitmq
def test_runs_its_own_broker_when_none_answers(tmp_path):
    if shutil.which("rabbitmq-server") is None and not Path("/usr/sbin/rabbitmq-server").exists():
        pytest.skip("rabbitmq-server is not installed (make system)")
    from kombu import Connection

    config = make_project(tmp_path, rabbitmq=True)
    runtime = LocalRuntime()
    ps = ProjectState(config.root)
    try:
        infra = runtime.ensure_infra(config)
        with Connection(infra.amqp_uri, connect_timeout=5) as connection:
            connection.connect()  # as the project's user, as services will
            assert connection.connected
        assert runtime.observe_units(config, "infra")["rabbitmq"].state == "running"
        assert (ps.data_dir(UNIT_RABBITMQ) / "mnesia").is_dir()
        # It booted with its modules preloaded (shopctl.infra.rabbitmq_boot).
        node = rabbitmq_env(config.project, 0, 0, ps.data_dir(UNIT_RABBITMQ))
        preloaded = subprocess.run(
            [rabbitmqctl_binary(own=True), "eval", "persistent_term:get(shopctl_preload, none)."],
            env={**os.environ, **{k: node[k] for k in ("RABBITMQ_NODENAME", "HOME")}},
            capture_output=True, text=True, timeout=60)
        assert preloaded.stdout.startswith("{ok,"), preloaded.stdout + preloaded.stderr
        runtime.down(config, volumes=False)
        assert marked_pids(ps.dir) == []
        assert not amqp_answers(config.infra.rabbitmq.port)
    finally:
        runtime.down(config, volumes=True)
