"""Issue 12, item 11 and 12 on the pure side: `status` at any width never cuts a state,
health or address (narrower layouts drop image, uptime, restarts, req/s and kind
first), and the rows add up to one line when nothing runs or Consul is unreachable."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from shopctl.cli import render
from shopctl.status import CONSUL_UNREACHABLE, ServiceRow, summarize
from tests.acceptance.test_readable_output import KEY_COLUMNS, cut_cells, table_rows


def row(name: str, *, state="running", health="passing", output="", address="127.0.0.1",
        port=50123, image=None, rate=None, kind="fastapi") -> ServiceRow:
    return ServiceRow(name=name, kind=kind, state=state, health=health, check_output=output,
                      address=address if state != "missing" else None,
                      port=port if state != "missing" else None, uptime_s=3725.0,
                      restarts=12, image=image, request_rate=rate)


def docker_rows() -> list[ServiceRow]:
    return [row(name, address="192.168.208.14", port=50051 + i, rate=12.5, state=state,
                health=health, image=f"shopctl-t0123456789/{name}:ab9842ab00d3")
            for i, (name, state, health) in enumerate([
                ("users", "running", "passing"), ("catalog", "restarting", "critical"),
                ("inventory", "running", "warning"), ("payments", "exited", "critical"),
                ("orders", "starting", "critical")])]


def printed(renderable, width: int) -> str:
    out = Console(file=io.StringIO(), width=width, color_system=None, highlight=False)
    out.print(renderable)
    return out.file.getvalue()


@pytest.mark.parametrize("width", [80, 100, 120, 200])
def test_state_health_and_address_are_never_cut(width, monkeypatch):
    monkeypatch.setenv("COLUMNS", str(width))
    text = printed(render.status_view(docker_rows(), "docker", "shop", width), width)
    rows = table_rows(text)
    assert [r["service"] for r in rows] == ["users", "catalog", "inventory", "payments", "orders"]
    assert cut_cells(text, ("service", *KEY_COLUMNS)) == [], text
    assert "…" not in text, text  # the other columns are dropped or shortened, not cut
    assert rows[1]["state"] == "restarting" and rows[3]["health"] == "critical"
    assert rows[0]["address"] == "192.168.208.14:50051"
    assert max(len(line) for line in text.splitlines()) <= width


def test_less_useful_columns_go_first_as_the_width_shrinks():
    def header(width):
        return list(table_rows(printed(render.status_table(docker_rows(), "docker", width),
                                       width))[0])

    widest = header(400)
    assert widest == ["service", "kind", "state", "health", "address", "uptime", "restarts",
                      "image", "req/s"]
    at_80 = header(80)
    assert {"service", "state", "health", "address"} <= set(at_80)
    assert "image" not in at_80 and "uptime" not in at_80
    assert set(header(60)) == {"service", "state", "health", "address"}


def test_a_very_narrow_terminal_gets_a_line_a_service_still_uncut():
    text = printed(render.status_view(docker_rows(), "docker", "shop", 30), 30)
    assert "…" not in text
    joined = " ".join(text.split())
    assert "catalog: restarting critical 192.168.208.14:50052" in joined


def test_local_rows_show_no_image_column():
    rows = [row("users"), row("orders", kind="nameko")]
    assert "image" not in table_rows(printed(render.status_table(rows, "local", 200), 200))[0]


def test_nothing_running_is_one_line_naming_the_project_and_shopctl_up():
    rows = [row(n, state="missing", health="unknown", output=CONSUL_UNREACHABLE)
            for n in ("users", "orders")]
    text = printed(render.status_view(rows, "local", "t123", 80), 80)
    assert text.splitlines() == ["nothing of project 't123' runs; `shopctl up` starts it"]
    assert summarize("t123", rows).to_dict() == {"project": "t123", "consul": "unreachable",
                                                  "running": 0}


def test_services_gone_while_consul_answers_is_one_line_too():
    rows = [row(n, state="missing", health="critical", output="not registered in Consul")
            for n in ("users", "orders")]
    text = printed(render.status_view(rows, "local", "t123", 80), 80)
    assert len(text.splitlines()) == 1 and "`shopctl up` starts them" in text


def test_consul_unreachable_is_said_once_not_on_every_row():
    rows = [row(n, health="unknown", output=CONSUL_UNREACHABLE) for n in ("users", "orders")]
    text = printed(render.status_view(rows, "local", "t123", 80), 80)
    assert text.count("Consul") == 1, text
    (line,) = [line for line in text.splitlines() if "Consul" in line]
    assert line == "Consul is not reachable: health unknown; `shopctl up` brings it back"
    assert [r["health"] for r in table_rows(text)] == ["unknown", "unknown"]
    assert summarize("t123", rows).consul == "unreachable"


def test_a_failing_check_is_one_line_below_the_table_not_inside_a_cell():
    rows = [row("users"), row("payments", health="critical",
                              output="HTTP GET http://127.0.0.1:50123/health: 503 "
                                     "Service Unavailable Output: provider down")]
    text = printed(render.status_view(rows, "local", "t123", 80), 80)
    assert [r["health"] for r in table_rows(text)] == ["passing", "critical"]
    notes = text.split("└")[1].splitlines()[1:]
    assert notes[0].startswith("payments: HTTP GET http://127.0.0.1:50123/health: 503")
    assert summarize("t123", rows).consul == "reachable"


def test_metrics_say_why_a_service_has_no_figures_below_the_table_not_in_a_cell():
    from shopctl.cli import metrics_cmd
    from shopctl.metrics import MetricsReport, ServiceMetrics

    report = MetricsReport(source="scrape", window="2.0s", services=[
        ServiceMetrics("users", True, 12.5, 0.0, 0.0, 3.1, 9.8),
        ServiceMetrics("payments", False, breaker="open",
                       problem="/metrics unreadable: ConnectError: [Errno 111] Connection "
                               "refused"),
    ])
    for width in (80, 50):
        text = printed(metrics_cmd.table(report, width), width)
        rows = table_rows(text)
        assert [r["service"] for r in rows] == ["users", "payments"]
        assert rows[1]["req/s"] == "down" and rows[0]["req/s"] == "12.50"
        assert "…" not in text and max(len(line) for line in text.splitlines()) <= width
        assert "payments: /metrics unreadable: ConnectError:" in text.split("└")[1]
    assert "p50" in table_rows(printed(metrics_cmd.table(report, 80), 80))[0]
    assert "p50" not in table_rows(printed(metrics_cmd.table(report, 50), 50))[0]
