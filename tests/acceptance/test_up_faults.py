"""`shopctl up` when the shop cannot come up (issue 12), on both runtimes, through the CLI:

- item 6: a service that crashes at start fails `up` within seconds of its second crash
  (not after its start period), as one error naming it, with its exit code and its last
  log lines, and says which of the other services are up; those are left running.
- item 8: a host port the plan needs that another process holds fails `up` before
  anything starts, naming the port, the holder's pid and the shop.yaml setting.

Each test runs a private copy of the demo shop (own project name, free ports).
"""

from __future__ import annotations

import json
import os
import socket
import time
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path

import httpx
import pytest
import yaml

from shopctl.testing import copy_demo_shop
from tests.acceptance.conftest import REPO
from tests.acceptance.test_shop_roundtrip import shopctl_in

PLANTED = "planted fault: catalog cannot start"
START_PERIOD = 120  # seconds; what the old gate waited (plus a grace) before saying anything


def write_config(root: Path, data: dict) -> None:
    (root / "shop.yaml").write_text(yaml.safe_dump(data, sort_keys=False))


@pytest.fixture(params=["docker", "local"])
def shop(request, tmp_path):
    data = copy_demo_shop(REPO, tmp_path, prefix="f")
    yield tmp_path, data, request.param
    shopctl_in(tmp_path, "down", "--volumes", "--rmi", "--runtime", request.param, timeout=180)


def plant_crash(root: Path, service: str) -> None:
    main = root / "services" / service / "main.py"
    text = main.read_text()
    marker = "def main() -> None:\n"
    assert marker in text
    main.write_text(text.replace(marker, f"{marker}    raise RuntimeError({PLANTED!r})\n", 1))


def instance_created(runtime: str, root: Path, project: str, service: str) -> float:
    """Unix time the runtime created the service's (current) instance, read past shopctl."""
    if runtime == "docker":
        import docker

        created = docker.from_env().containers.get(f"shopctl-{project}-{service}").attrs["Created"]
        # The engine writes nanoseconds ("2024-01-01T00:00:00.123456789Z").
        whole, _, fraction = created.rstrip("Z").partition(".")
        stamp = datetime.fromisoformat(whole + "+00:00").timestamp()
        return stamp + float(f"0.{fraction or 0}")
    record = json.loads((root / ".shopctl" / "local" / "run" / f"{service}.json").read_text())
    return record["supervisor_started_at"]


@pytest.mark.docker
@pytest.mark.consul
def test_a_service_crashing_at_start_fails_up_at_once_with_its_logs(shop):
    root, data, runtime = shop
    services = data["services"]
    others = [name for name in services if name != "catalog"]
    # catalog starts last, once every other service answers, and never answers itself.
    services["catalog"]["depends_on"] = others
    services["catalog"]["health"]["start_period"] = f"{START_PERIOD}s"
    write_config(root, data)
    plant_crash(root, "catalog")

    started = time.monotonic()
    up = shopctl_in(root, "up", "--runtime", runtime, timeout=2 * START_PERIOD + 120)
    elapsed = time.monotonic() - started
    ended = time.time()
    err = up.stderr

    assert up.returncode == 1, up.stdout[-2000:] + err[-4000:]
    assert "catalog crashed while starting (exit code 1)" in err, err[-4000:]
    assert f"RuntimeError: {PLANTED}" in err, err[-4000:]  # its own last log lines
    assert "cannot register" not in err and "Traceback" in err
    assert f"up and healthy: {', '.join(others)}" in err, err[-4000:]
    assert sum(line.startswith("error:") for line in err.splitlines()) == 1  # one error
    # Within seconds of catalog's start: far below its start period. (The old gate said
    # nothing for START_PERIOD + 30 s after it started.)
    since_start = ended - instance_created(runtime, root, data["project"], "catalog")
    assert since_start < 20, f"reported {since_start:.1f}s after catalog started"
    assert elapsed < START_PERIOD / 2, f"up took {elapsed:.1f}s"

    # The other services were left as they are: running and passing.
    status = shopctl_in(root, "status", "--json")
    rows = {row["name"]: row for row in json.loads(status.stdout)["services"]}
    for name in others:
        assert (rows[name]["state"], rows[name]["health"]) == ("running", "passing"), rows[name]


def hold_port(stack: ExitStack) -> int:
    """A port this process listens on (as another program would hold it)."""
    sock = stack.enter_context(socket.socket())
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock.getsockname()[1]


@pytest.mark.docker
@pytest.mark.consul
def test_a_port_conflict_is_found_before_anything_starts(shop):
    root, data, runtime = shop
    services = data["services"]
    with ExitStack() as stack:
        # orders starts last; inventory's metrics port is not its main port.
        orders_port, metrics_port = hold_port(stack), hold_port(stack)
        services["orders"]["port"] = orders_port
        services["inventory"]["metrics_port"] = metrics_port
        write_config(root, data)

        up = shopctl_in(root, "up", "--runtime", runtime, timeout=300)

        err = up.stderr
        assert up.returncode == 1, up.stdout[-2000:] + err[-4000:]
        me = os.getpid()
        assert f"port {orders_port} (services.orders.port) is in use by pid {me}" in err, err
        assert (f"port {metrics_port} (services.inventory.metrics_port) is in use by pid {me}"
                in err), err
        assert "nothing was started" in err
        assert_nothing_started(runtime, root, data)


def assert_nothing_started(runtime: str, root: Path, data: dict) -> None:
    name = data["project"]
    if runtime == "docker":
        import docker

        label = f"io.shopctl.project={name}"
        client = docker.from_env()
        assert client.containers.list(all=True, filters={"label": label}) == []
        assert client.networks.list(filters={"label": label}) == []
    else:
        from shopctl.runtime.local import marked_pids
        from shopctl.state import ProjectState

        state = ProjectState(root)
        assert marked_pids(state.dir) == []  # no supervisor, no process of the project
        assert not state.run_dir.exists() or list(state.run_dir.glob("*.json")) == []
    with pytest.raises(httpx.ConnectError):  # no Consul of the project
        httpx.get(f"http://127.0.0.1:{data['infra']['consul']['port']}/v1/agent/self", timeout=2)
