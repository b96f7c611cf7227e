"""`shopctl saga` on a saga log in PostgreSQL (a real server), named by shop.yaml's
`saga_log.url` with its password from the environment, or by SHOPCTL_SAGA_LOG: the
CLI reads what drivers wrote there, and a url's password never reaches the terminal."""

from __future__ import annotations

import json

from shopctl.saga import log as L
from shopctl.saga.store import open_log
from tests.acceptance.conftest import run_shopctl


def _project(tmp_path):
    (tmp_path / "shop.yaml").write_text(
        "project: demo\nsaga_log:\n  url: ${SAGA_LOG_URL}\n  lease: 5s\n")
    return tmp_path


def test_list_and_show_read_the_postgresql_log_shop_yaml_names(pg_server, tmp_path):
    url = pg_server.new_database()
    with open_log(url) as log:  # a driver on some host
        saga, _ = log.create("order", {"user_id": "u-1"}, {"steps": []})
        log.commit(saga.id, [L.Transition("a", L.STARTED, 1)])
        log.commit(saga.id, [L.Transition("a", L.SUCCEEDED, 1)], status=L.COMPLETED,
                   outbox=[("order.completed", {"saga_id": saga.id})])
    root = _project(tmp_path)
    env = {"SAGA_LOG_URL": url}
    listed = run_shopctl("saga", "list", "--json", cwd=root, env=env)
    assert listed.returncode == 0, listed.stderr
    assert [(s["id"], s["status"]) for s in json.loads(listed.stdout)] == [
        (saga.id, L.COMPLETED)]
    shown = run_shopctl("saga", "show", saga.id[:8], "--json", cwd=root, env=env)
    assert shown.returncode == 0, shown.stderr
    detail = json.loads(shown.stdout)
    assert [e["state"] for e in detail["events"]] == [L.STARTED, L.SUCCEEDED]
    assert [e["event_type"] for e in detail["outcome_events"]] == ["order.completed"]
    assert not (root / ".shopctl" / "saga.db").exists()  # no SQLite log on the side


def test_an_unreachable_log_is_one_message_without_the_password(pg_server, tmp_path):
    root = _project(tmp_path)
    secret = pg_server.url("no_such_database", password="pw-never-shown")
    (root / "shop.yaml").write_text("project: demo\nsaga_log:\n  url: ${SAGA_LOG_URL:-}\n")
    done = run_shopctl("saga", "list", cwd=root, env={"SHOPCTL_SAGA_LOG": secret})
    assert done.returncode != 0
    assert "pw-never-shown" not in done.stdout + done.stderr
    assert "cannot open the saga log postgresql://shopctl:***@" in done.stderr
    assert "Traceback" not in done.stderr
    config = run_shopctl("config", "show", "--json", cwd=root,
                         env={"SAGA_LOG_URL": secret})
    assert "pw-never-shown" not in config.stdout + config.stderr
