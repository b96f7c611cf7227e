"""The local runtime's pure parts: log format, run records, environments, ports, log reading."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shopctl.broker import AMQP_HEADER
from shopctl.errors import OperationFailed
from shopctl.infra.local import consul_argv, rabbitmq_env
from shopctl.runtime.local import (
    LocalRuntime,
    amqp_answers,
    child_env,
    endpoints,
    require_free_port,
    service_state,
)
from shopctl.runtime.supervisor import (
    LogReader,
    describe_exit,
    exit_code,
    format_line,
    next_backoff,
    parse_line,
)
from shopctl.state import ProjectState

# -- supervisor formats ----------------------------------------------------------------


def test_log_line_round_trip():
    when = 1_700_000_000.123456
    line = format_line("hello world", when)
    assert line.startswith("2023-11-14T22:13:20.123456Z hello world")
    assert parse_line(line) == (pytest.approx(when, abs=1e-6), "hello world")


def test_line_without_timestamp_is_kept_whole():
    assert parse_line("Traceback (most recent call last):\n") == (
        None,
        "Traceback (most recent call last):",
    )
    assert parse_line("2023-13-99T99:99:99.000000Z nope") == (
        None,
        "2023-13-99T99:99:99.000000Z nope",
    )


def test_exit_codes_follow_the_shell_convention():
    assert exit_code(-9) == 137
    assert exit_code(3) == 3
    assert describe_exit(-9) == "killed by SIGKILL (exit 137)"
    assert describe_exit(0) == "exit code 0"


def test_backoff_doubles_and_is_capped():
    delays = [next_backoff(n, 0.5, 4.0) for n in range(1, 7)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


# -- run records -----------------------------------------------------------------------

RECORD = {
    "unit": "users",
    "role": "service",
    "state": "running",
    "supervisor_pid": 10,
    "child_pid": 11,
    "started_at": 1.5,
    "restarts": 2,
    "config_hash": "abc",
    "last_exit_code": 137,
    "log": "/x/users.log",
    "meta": {"port": 8001},
}


def test_record_of_a_live_supervisor():
    state = service_state(RECORD, alive=True)
    assert (state.state, state.instance_id, state.restarts) == ("running", "11", 2)
    assert (state.address, state.port, state.host_port) == ("127.0.0.1", 8001, 8001)
    assert state.config_hash == "abc" and state.exit_code == 137 and state.image is None


def test_record_of_a_dead_supervisor_is_exited():
    state = service_state(RECORD, alive=False)
    assert state.state == "exited"
    assert state.instance_id is None


# -- what runs -------------------------------------------------------------------------


def test_child_env_takes_the_contract_only_from_the_spec():
    inherited = {"PATH": "/bin", "SHOP_PORT": "1", "SHOP_STALE": "x", "CONSUL_HTTP_ADDR": "a:1"}
    env = child_env(inherited, {"SHOP_PORT": "8001"}, {"SHOP_HOST": "127.0.0.1"})
    assert env == {"PATH": "/bin", "SHOP_PORT": "8001", "SHOP_HOST": "127.0.0.1"}


def test_consul_argv_keeps_every_other_port_private():
    argv = consul_argv("consul", "shop", 8500, Path("/d"), 40001, 40002)
    flags = dict(zip(argv[3::2], argv[4::2], strict=True))
    assert argv[:3] == ["consul", "agent", "-dev"]
    assert flags["-http-port"] == "8500" and flags["-client"] == "127.0.0.1"
    assert flags["-dns-port"] == flags["-grpc-port"] == flags["-serf-wan-port"] == "-1"
    assert flags["-serf-lan-port"] == "40001" and flags["-server-port"] == "40002"
    assert flags["-node"] == "shopctl-shop"


def test_rabbitmq_env_stays_in_the_state_dir(tmp_path):
    env = rabbitmq_env("shop", 5673, 25999, tmp_path)
    assert env["RABBITMQ_NODENAME"] == "shopctl-shop@localhost"
    assert env["RABBITMQ_NODE_PORT"] == "5673" and env["RABBITMQ_DIST_PORT"] == "25999"
    private = ("RABBITMQ_MNESIA_BASE", "RABBITMQ_LOG_BASE", "HOME", "RABBITMQ_ENABLED_PLUGINS_FILE")
    for key in private:
        assert Path(env[key]).is_relative_to(tmp_path), key
    # the node preloads its modules from a file in the same folder (shopctl.infra.rabbitmq_boot)
    assert f'file:script("{tmp_path / "preload.erl"}")' in env["ERL_AFLAGS"]


def test_endpoints_are_loopback_for_host_and_services(tmp_path):
    config = _config(tmp_path, consul_port=18500, amqp_port=15672)
    ep = endpoints(config)
    assert ep.consul_http == "http://127.0.0.1:18500"
    assert ep.service_consul_addr == "127.0.0.1:18500"
    # the project's own broker user, with its generated password (never guest)
    password = (tmp_path / ".shopctl" / "secrets" / "rabbitmq_password").read_text().strip()
    assert len(password) >= 24
    expected = f"amqp://shopctl-{config.project}:{password}@127.0.0.1:15672/"
    assert ep.amqp_uri == ep.service_amqp_uri == expected


# -- ports -----------------------------------------------------------------------------


def test_a_taken_port_names_its_holder():
    holder = subprocess.Popen(
        [sys.executable, "-c", _LISTEN_AND_WAIT], stdout=subprocess.PIPE, text=True
    )
    try:
        port = int(holder.stdout.readline())
        with pytest.raises(OperationFailed) as caught:
            require_free_port(port, "services.users.port", None)
        message = str(caught.value)
        assert f"port {port} (services.users.port) is in use by pid {holder.pid}" in message
        assert "-c" in message, "the holder's command line is shown"
    finally:
        holder.kill()
        holder.wait()


def test_amqp_answers_only_for_amqp():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert amqp_answers(port, timeout=0.5) is False, "a silent listener is not a broker"
    assert AMQP_HEADER == b"AMQP\x00\x00\x09\x01"


# -- log reading -----------------------------------------------------------------------


def test_log_reader_returns_complete_lines_incrementally(tmp_path):
    path = tmp_path / "users.log"
    reader = LogReader("users", path)
    assert reader.read_new() == [], "a missing file is no lines yet"
    path.write_text(format_line("one", 10.0) + "Traceback: no stamp\n" + "2023-partial")
    lines = reader.read_new()
    assert [(line.text, line.timestamp) for line in lines] == [
        ("one", 10.0),
        ("Traceback: no stamp", 10.0),  # borrows the previous stamp
    ]
    with path.open("a") as handle:
        handle.write("\n" + format_line("two", 11.0))
    assert [line.text for line in reader.read_new()] == ["2023-partial", "two"]
    path.write_text(format_line("fresh", 12.0))  # truncated and rewritten
    assert [line.text for line in reader.read_new()] == ["fresh"]


def test_logs_interleave_by_time_and_tail_per_service(tmp_path):
    config = _config(tmp_path)
    ps = ProjectState(config.root)
    ps.ensure(ps.logs_dir)
    ps.log_file("users").write_text("".join(format_line(f"u{i}", 10.0 + i * 2) for i in range(5)))
    ps.log_file("catalog").write_text(
        "".join(format_line(f"c{i}", 11.0 + i * 2) for i in range(5))
    )
    runtime = LocalRuntime()
    everything = [line.text for line in runtime.logs(config, [], follow=False, tail=None)]
    assert everything == ["u0", "c0", "u1", "c1", "u2", "c2", "u3", "c3", "u4", "c4"]
    tailed = list(runtime.logs(config, ["users", "catalog"], follow=False, tail=2))
    assert [(line.service, line.text) for line in tailed] == [
        ("users", "u3"), ("catalog", "c3"), ("users", "u4"), ("catalog", "c4"),
    ]
    assert list(runtime.logs(config, ["users"], follow=False, tail=0)) == []


def test_follow_yields_lines_as_they_are_written(tmp_path):
    config = _config(tmp_path)
    ps = ProjectState(config.root)
    ps.ensure(ps.logs_dir)
    ps.log_file("users").write_text(format_line("old", time.time()))
    stream = LocalRuntime().logs(config, ["users"], follow=True, tail=1)
    assert next(stream).text == "old"
    with ps.log_file("users").open("a") as handle:
        handle.write(format_line("new", time.time()))
    assert next(stream).text == "new"
    stream.close()


# -- helpers ---------------------------------------------------------------------------

_LISTEN_AND_WAIT = (
    "import socket,sys,time\n"
    "s=socket.socket(); s.bind(('127.0.0.1',0)); s.listen()\n"
    "print(s.getsockname()[1], flush=True); time.sleep(60)\n"
)


def _config(tmp_path: Path, consul_port: int = 8500, amqp_port: int = 5672):
    from shopctl.config import load_config

    for name in ("users", "catalog"):
        (tmp_path / "services" / name).mkdir(parents=True, exist_ok=True)
    (tmp_path / "shop.yaml").write_text(
        "project: unit\n"
        f"infra: {{consul: {{port: {consul_port}}}, rabbitmq: {{port: {amqp_port}}}}}\n"
        "services:\n"
        "  users: {kind: flask, port: 18001}\n"
        "  catalog: {kind: fastapi, port: 18002}\n"
    )
    return load_config(tmp_path / "shop.yaml")
