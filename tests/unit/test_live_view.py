"""Issue 12, item 12 in the view of `up` and `down`: on a terminal, lines stop spinning
when their part is ready and a check still in its start period is no failure; in a
pipe, one line per event, no Docker build steps unless --verbose."""

from __future__ import annotations

import io

from rich.console import Console

from shopctl.cli.live import LiveView

SPINNER_FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def pipe() -> Console:
    return Console(file=io.StringIO(), width=80, color_system=None, force_terminal=False)


def frame(view: LiveView) -> dict[str, str]:
    """{subject: "MARK message"} of the view's current frame, as a terminal shows it."""
    out = Console(file=io.StringIO(), width=80, color_system=None, force_terminal=True)
    out.print(view._render())
    lines = {}
    for line in out.file.getvalue().splitlines():
        mark, subject, message = line.split(maxsplit=2)
        lines[subject] = f"{mark} {message.rsplit(maxsplit=1)[0]}"
    return lines


def spinning(text: str) -> bool:
    return text[0] in SPINNER_FRAMES


def terminal_view(**kwargs) -> tuple[LiveView, Clock]:
    """A view on a terminal, never entered (so no Live thread runs): `frame` renders it."""
    clock = Clock()
    console = Console(file=io.StringIO(), width=80, color_system=None, force_terminal=True)
    return LiveView("up", console, clock=clock, **kwargs), clock


def test_infra_stops_spinning_once_ready_or_found_running():
    view, _ = terminal_view()
    view("consul", "starting agent on :8500")
    view("rabbitmq", "starting broker on :5673 (takes ~10 s)")
    assert spinning(frame(view)["consul"]) and spinning(frame(view)["rabbitmq"])
    view("consul", "ready")
    view("rabbitmq", "running on :5673")
    view("prometheus", "ready on :9090")
    assert frame(view) == {"consul": "✓ ready", "rabbitmq": "✓ running on :5673",
                           "prometheus": "✓ ready on :9090"}


def test_a_critical_check_within_the_start_period_is_waiting_not_failed():
    view, clock = terminal_view(start_periods={"users": 30.0})
    view("users", "starting")
    clock.now += 2
    view("users", "registered, waiting for checks")
    view("users", "check critical")
    shown = frame(view)["users"]
    assert spinning(shown) and "✗" not in shown and "waiting for checks" in shown
    clock.now += 40  # past the start period: now it is news, though up still waits
    assert "check critical" in frame(view)["users"]
    view.__exit__(RuntimeError, RuntimeError("unhealthy"), None)  # up gave up on it
    assert frame(view)["users"] == "✗ check critical"


def test_a_good_end_leaves_no_spinner():
    view, _ = terminal_view()
    view("shopctl-t1-users", "removing")
    view("shopctl-t1", "removing network")
    view.__exit__(None, None, None)
    assert frame(view) == {"shopctl-t1-users": "✓ removed", "shopctl-t1": "✓ removed network"}


def test_build_steps_become_a_counter_on_a_terminal():
    view, _ = terminal_view()
    view("users", "building image shopctl-t1/users:ab9842ab00d3")
    view("users", "Step 6/14 : RUN /opt/venv/bin/pip install --no-cache-dir --no-index "
                  "--find-links /wheels -r /opt/requirements/requirements.txt")
    assert frame(view)["users"].endswith("building image, step 6/14")


def test_a_pipe_gets_one_line_per_event_and_no_build_steps():
    console = pipe()
    clock = Clock()
    view = LiveView("up", console, clock=clock, start_periods={"users": 30.0})
    with view:
        view("users", "building image shopctl-t1/users:ab9842ab00d3")
        for n in range(1, 15):
            view("users", f"Step {n}/14 : LABEL io.shopctl.config-hash={'a' * 64}")
        view("users", "starting")
        view("users", "starting")  # the same news twice is one line
        view("users", "check critical")  # within its start period: no news
        view("rabbitmq", "starting container shopctl-t1-rabbitmq (shopctl/rabbitmq:3.10) "
                         "with a long description that does not fit in eighty columns")
        view("users", "healthy")
    assert console.file.getvalue().splitlines() == [
        "users          building image shopctl-t1/users:ab9842ab00d3",
        "users          starting",
        "rabbitmq       starting container shopctl-t1-rabbitmq (shopctl/rabbitmq:3.10) "
        "with a long description that does not fit in eighty columns",
        "users          healthy",
    ]


def test_verbose_pipes_show_build_steps_and_late_checks():
    console = pipe()
    view = LiveView("up", console, verbose=True, clock=Clock(), start_periods={"users": 30.0})
    view("users", "starting")
    view("users", "Step 1/14 : FROM shopctl/python:3.11")
    view("users", "check critical")
    assert console.file.getvalue().splitlines() == [
        "users          starting", "users          Step 1/14 : FROM shopctl/python:3.11",
        "users          check critical"]


def test_outcomes_of_the_runtimes_messages():
    from shopctl.cli.live import outcome

    done = ["healthy", "unchanged", "ready", "stopped", "running on :8500",
            "reusing the broker already answering AMQP on :5673", "deregistered 5 services",
            "image shopctl-t1/users:ab9842ab00d3 is up to date", "built in 52.1s",
            "Consul bridge running on :9091", "removed /tmp/t1/.shopctl/local/data"]
    assert {m: outcome(m) for m in done} == dict.fromkeys(done, "ok")
    busy = ["starting", "waiting for a leader", "running as pid 12", "removing",
            "registered, waiting for checks", "building image shopctl-t1/users:ab98"]
    assert {m: outcome(m) for m in busy} == dict.fromkeys(busy)
    assert outcome("image kept: in use by 3f2a") == "warn"
