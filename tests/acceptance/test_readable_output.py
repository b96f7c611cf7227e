"""Issue 12, items 11 and 12, through the real CLI with its output captured (a pipe) at
COLUMNS=80, and once on a pseudo-terminal:

- item 11: `status` of a project that never ran is one line with `shopctl up`; with
  Consul killed under running services, one line says so (and `shopctl up` brings it
  back); `down` of a project that never ran says there is nothing to remove, exit 0;
- item 12: `status` and the summary after `up` cut no state, health or address; `up` in
  a pipe is one line per service event (bounded), no Docker build steps unless
  --verbose; on a terminal, infra lines stop spinning and a normal start shows no cross.

The local runtime for speed; docker where the item is Docker's (build steps).
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shopctl.testing import wait_for
from tests.acceptance.conftest import run_shopctl
from tests.acceptance.test_shop_roundtrip import SERVICES, make_project, stop_service

NARROW = {"COLUMNS": "80"}
INFRA = ("consul", "rabbitmq")
BUILD_STEP = re.compile(r"\bStep \d+/\d+ :")
RUNTIMES = ["local", pytest.param("docker", marks=pytest.mark.docker)]


def shopctl_in(root: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return run_shopctl(*args, cwd=root, env=NARROW, timeout=timeout)


def assert_one_line_per_event(stderr: str, allowed_subjects) -> list[str]:
    lines = stderr.splitlines()
    assert lines, "up printed nothing"
    # A small multiple of the parts, whatever the build does.
    assert len(lines) <= 6 * (len(SERVICES) + len(INFRA)), stderr
    assert not [line for line in lines if BUILD_STEP.search(line)], stderr
    assert not [line for line in lines if line.split()[0] not in allowed_subjects], stderr
    assert not [line for line in lines if "check critical" in line], stderr  # a normal start
    for subject in allowed_subjects:  # the same news twice in a row is one line
        own = [line for line in lines if line.split()[0] == subject]
        assert all(a != b for a, b in zip(own, own[1:], strict=False)), stderr
    return lines


def assert_uncut_table(stdout: str, runtime: str) -> list[dict[str, str]]:
    rows = table_rows(stdout)
    assert [row["service"] for row in rows] == list(SERVICES), stdout
    assert cut_cells(stdout) == [], stdout
    assert {row["state"] for row in rows} == {"running"}, stdout
    assert max(len(line) for line in stdout.splitlines()) <= 80, stdout
    if runtime == "local":
        assert all(re.fullmatch(r"127\.0\.0\.1:\d+", row["address"]) for row in rows), stdout
    return rows


KEY_COLUMNS = ("state", "health", "address")


def table_rows(text: str) -> list[dict[str, str]]:
    """The cells of a rich box table as printed: {header: cell} per body line."""
    header: list[str] = []
    rows = []
    for line in text.splitlines():
        if "┃" in line and not header:
            header = [cell.strip() for cell in line.split("┃")[1:-1]]
        elif "│" in line and header:
            cells = [cell.strip() for cell in line.split("│")[1:-1]]
            rows.append(dict(zip(header, cells, strict=True)))
    return rows


def cut_cells(text: str, columns=KEY_COLUMNS) -> list[str]:
    """Cells of `columns` that rich cut (ending in an ellipsis) or left empty."""
    return [f"{name}={row.get(name)!r}" for row in table_rows(text) for name in columns
            if not row.get(name) or row[name].endswith("…")]


# -- item 11: a project that never ran ----------------------------------------------------


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_status_of_a_project_that_never_ran_is_one_line_with_shopctl_up(tmp_path, runtime):
    root, data = make_project(tmp_path)
    result = shopctl_in(root, "status", "--runtime", runtime, timeout=60)
    assert result.returncode == 1, result.stderr  # not healthy, as the exit codes say
    assert result.stdout.splitlines() == [
        f"nothing of project {data['project']!r} runs; `shopctl up` starts it"], result.stdout
    report = json.loads(shopctl_in(root, "status", "--json", "--runtime", runtime).stdout)
    assert (report["project"], report["consul"], report["running"]) == (
        data["project"], "unreachable", 0)
    assert {row["state"] for row in report["services"]} == {"missing"}


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_down_of_a_project_that_never_ran_says_nothing_to_remove(tmp_path, runtime):
    root, data = make_project(tmp_path)
    result = shopctl_in(root, "down", "--runtime", runtime, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"down: nothing of project {data['project']!r} to remove"
    assert "removed" not in result.stdout + result.stderr


# -- a running local shop, brought up in a pipe at 80 columns ------------------------------


@pytest.fixture(scope="module")
def local_shop(tmp_path_factory):
    root, data = make_project(tmp_path_factory.mktemp("readable"))
    up = shopctl_in(root, "up", "--runtime", "local")
    try:
        yield root, data, up
    finally:
        run_shopctl("down", "--volumes", "--runtime", "local", cwd=root, timeout=180)


@pytest.mark.consul
def test_up_in_a_pipe_is_one_line_per_service_event(local_shop):
    root, data, up = local_shop
    assert up.returncode == 0, up.stderr[-3000:]
    lines = assert_one_line_per_event(up.stderr, {*SERVICES, *INFRA, "python"})
    for name in SERVICES:
        assert f"{name:<14} healthy" in lines


@pytest.mark.consul
def test_the_summary_after_up_cuts_no_state_health_or_address(local_shop):
    root, data, up = local_shop
    assert up.returncode == 0, up.stderr[-3000:]
    rows = assert_uncut_table(up.stdout, "local")
    assert {row["health"] for row in rows} == {"passing"}
    by_name = {row["service"]: row["address"] for row in rows}
    assert {name: by_name[name].rsplit(":", 1)[1] for name in SERVICES} == {
        name: str(data["services"][name]["port"]) for name in SERVICES}


@pytest.mark.consul
@pytest.mark.parametrize("columns", [80, 60])
def test_status_at_narrow_widths_cuts_no_state_health_or_address(local_shop, columns):
    root, data, up = local_shop
    assert up.returncode == 0, up.stderr[-3000:]
    result = run_shopctl("status", cwd=root, env={"COLUMNS": str(columns)}, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = assert_uncut_table(result.stdout, "local")
    assert {row["health"] for row in rows} == {"passing"}
    assert "…" not in result.stdout, result.stdout
    assert max(len(line) for line in result.stdout.splitlines()) <= columns


@pytest.mark.consul
def test_the_live_view_on_a_terminal_ends_with_no_spinner_and_no_cross(local_shop):
    """`up` again on a pseudo-terminal, after payments crashed for good: Consul and
    RabbitMQ are found running, payments starts again (its check is critical until its
    first pass, within its start period) and the others are re-registered. No frame
    shows a cross, and the last frame ticks every line."""
    root, data, up = local_shop
    assert up.returncode == 0, up.stderr[-3000:]
    stop_service("local", root, data, "payments")
    code, screen = run_on_terminal(root, "up", "--runtime", "local")
    assert code == 0, screen
    plain = strip_ansi(screen)
    assert "✗" not in plain, plain
    last = final_frame(screen)
    for subject in (*INFRA, *SERVICES):
        (line,) = [line for line in last if line.split()[1:2] == [subject]]
        assert line.startswith("✓"), last


@pytest.mark.consul
def test_status_with_consul_down_says_so_in_one_line(local_shop):
    root, data, up = local_shop
    assert up.returncode == 0, up.stderr[-3000:]
    consul = json.loads((root / ".shopctl/local/run/_consul.json").read_text())
    os.kill(consul["supervisor_pid"], signal.SIGTERM)  # its agent goes with it
    port = data["infra"]["consul"]["port"]
    wait_for(lambda: not answers(port), 15, "Consul to stop answering")

    result = shopctl_in(root, "status", timeout=60)
    assert result.returncode == 1, result.stdout + result.stderr
    mentions = [line for line in result.stdout.splitlines() if "Consul" in line]
    assert mentions == [
        "Consul is not reachable: health unknown; `shopctl up` brings it back"], result.stdout
    rows = assert_uncut_table(result.stdout, "local")
    assert {row["health"] for row in rows} == {"unknown"}
    assert len(result.stdout.splitlines()) <= len(SERVICES) + 8  # no row wraps
    report = json.loads(shopctl_in(root, "status", "--json").stdout)
    assert (report["consul"], report["running"]) == ("unreachable", len(SERVICES))

    again = shopctl_in(root, "up")  # what the line says to do
    assert again.returncode == 0, again.stderr[-3000:]
    assert shopctl_in(root, "status").returncode == 0


# -- docker: build steps ------------------------------------------------------------------


@pytest.mark.docker
@pytest.mark.consul
def test_a_fresh_docker_up_in_a_pipe_shows_build_steps_only_when_verbose(tmp_path):
    root, data = make_project(tmp_path)
    try:
        up = shopctl_in(root, "up", "--runtime", "docker")
        assert up.returncode == 0, up.stderr[-3000:]
        assert_one_line_per_event(up.stderr, {*SERVICES, *INFRA})
        assert len([line for line in up.stderr.splitlines() if "building image" in line]) \
            == len(SERVICES), up.stderr
        assert_uncut_table(up.stdout, "docker")

        main = root / data["services"]["users"]["path"] / "main.py"
        main.write_text(main.read_text() + "\n# changed: users is rebuilt\n")
        verbose = shopctl_in(root, "--verbose", "up")
        assert verbose.returncode == 0, verbose.stderr[-3000:]
        steps = [line for line in verbose.stderr.splitlines() if BUILD_STEP.search(line)]
        assert steps and {line.split()[0] for line in steps} == {"users"}, verbose.stderr
    finally:
        run_shopctl("down", "--volumes", "--rmi", "--runtime", "docker", cwd=root, timeout=180)


# -- helpers ------------------------------------------------------------------------------


def answers(port: int) -> bool:
    import httpx

    try:
        httpx.get(f"http://127.0.0.1:{port}/v1/status/leader", timeout=1)
        return True
    except httpx.HTTPError:
        return False


ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


def strip_ansi(text: str) -> str:
    return ANSI.sub("", text).replace("\r", "")


def final_frame(screen: str) -> list[str]:
    """The live view's last frame: what follows its last cursor-up, before the summary."""
    tail = strip_ansi(screen[screen.rfind("\x1b[1A"):])
    lines = [line.rstrip() for line in tail.splitlines() if line.strip()]
    end = next(i for i, line in enumerate(lines) if re.match(r"\d+ services \(", line))
    return lines[:end]


def run_on_terminal(root: Path, *args: str, timeout: float = 300) -> tuple[int, str]:
    """Run shopctl with a pseudo-terminal (80x40) as stdin, stdout and stderr."""
    import fcntl
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 80, 0, 0))
    env = {k: v for k, v in os.environ.items()
           if k not in ("SHOPCTL_FILE", "NO_COLOR", "FORCE_COLOR", "COLUMNS", "LINES")}
    env["TERM"] = "xterm-256color"
    proc = subprocess.Popen([sys.executable, "-m", "shopctl", *args], cwd=root, env=env,
                            stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the child side is closed
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    return code, b"".join(chunks).decode("utf-8", "replace")
