"""What only the PostgreSQL saga log does (a real server, tests/pgserver.py): leases
instead of pids, fencing of a replaced driver, claims that skip a locked row, and a
url whose password never shows. Where it lives: saga_log in shop.yaml, or the
environment."""

from __future__ import annotations

import threading

import psycopg
import pytest

from shopctl.errors import ProjectStateError
from shopctl.saga import log as L
from shopctl.saga import pglog
from shopctl.saga.store import LOG_ENV, mask, open_log, project_location

OTHER = "far.example/4242/1/0123456789ab/cafe0000"  # a driver on another host


@pytest.fixture
def url(pg_server):
    return pg_server.new_database()


def _set_owner(url: str, saga_id: str, owner: str | None, lease_from_now: float) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE sagas SET owner = %s, lease_until ="
                     " extract(epoch from clock_timestamp()) + %s WHERE id = %s",
                     (owner, lease_from_now, saga_id))


def test_a_saga_is_busy_while_its_drivers_lease_runs_and_taken_once_it_ran_out(url):
    with open_log(url, lease=5) as log:
        saga, _ = log.create("order", {}, {"steps": []})
        log.release(saga.id)
        _set_owner(url, saga.id, OTHER, 30)
        with pytest.raises(L.SagaBusy, match="process 4242 on host far.example"):
            log.claim(saga.id)
        _set_owner(url, saga.id, OTHER, -0.1)  # its host went silent: the lease ran out
        assert log.claim(saga.id).id == saga.id
        with psycopg.connect(url) as conn:
            owner, left = conn.execute(
                "SELECT owner, lease_until - extract(epoch from clock_timestamp())"
                " FROM sagas WHERE id = %s", (saga.id,)).fetchone()
        assert owner == pglog.token() and 4 < left <= 5


def test_a_driver_whose_saga_was_taken_over_writes_nothing_more(url):
    with open_log(url) as log:
        saga, _ = log.create("order", {}, {"steps": []})
        log.record(saga.id, "a", L.STARTED, 1)
        _set_owner(url, saga.id, OTHER, 30)  # it stalled past its lease; another took it
        with pytest.raises(pglog.LeaseLost, match="taken over by process 4242"):
            log.commit(saga.id, [L.Transition("a", L.SUCCEEDED, 1)], status=L.COMPLETED)
        assert [e.state for e in log.events(saga.id)] == [L.STARTED]
        assert log.get(saga.id).status == L.RUNNING


def test_a_claim_skips_a_row_another_driver_is_claiming_instead_of_waiting(url):
    with open_log(url) as log:
        saga, _ = log.create("order", {}, {"steps": []})
        log.release(saga.id)
        locked, done = threading.Event(), threading.Event()

        def other_driver():
            with psycopg.connect(url) as conn:
                conn.execute("SELECT 1 FROM sagas WHERE id = %s FOR UPDATE", (saga.id,))
                locked.set()
                done.wait(10)

        thread = threading.Thread(target=other_driver)
        thread.start()
        try:
            assert locked.wait(10)
            with pytest.raises(L.SagaBusy):
                log.claim(saga.id)  # at once: SKIP LOCKED
        finally:
            done.set()
            thread.join()
        assert log.claim(saga.id).id == saga.id


def test_leases_are_renewed_while_a_driver_holds_a_saga(url):
    with open_log(url, lease=0.6) as log:
        saga, _ = log.create("order", {}, {"steps": []})
        threading.Event().wait(1.5)  # a long step call: no commit meanwhile
        with psycopg.connect(url) as conn:
            (left,) = conn.execute(
                "SELECT lease_until - extract(epoch from clock_timestamp()) FROM sagas"
                " WHERE id = %s", (saga.id,)).fetchone()
        assert left > 0


def test_a_url_with_a_password_never_shows_it(pg_server):
    secret = pg_server.url("no_such_database", password="s3cr3t-pw")
    assert mask(secret) == pg_server.url("no_such_database", password="***")
    with pytest.raises(ProjectStateError) as failure:
        open_log(secret)
    assert "s3cr3t-pw" not in failure.value.message + str(failure.value.hint)
    assert "no_such_database" in failure.value.message


def test_the_log_lives_where_the_environment_then_shop_yaml_say(tmp_path):
    from shopctl.config import load_config

    shop = tmp_path / "shop.yaml"
    shop.write_text("project: demo\nsaga_log:\n  url: ${SAGA_DB_URL}\n  lease: 20s\n")
    config = load_config(shop, environ={"SAGA_DB_URL": "postgresql://u:pw@db:5432/sagas"})
    assert config.saga_log.lease == 20.0
    assert project_location(config, environ={}) == "postgresql://u:pw@db:5432/sagas"
    assert project_location(config, environ={LOG_ENV: "postgresql://x@h/y"}) == \
        "postgresql://x@h/y"
    assert config.to_public_dict()["saga_log"]["url"] == "postgresql://u:***@db:5432/sagas"
    default = tmp_path / "default"
    default.mkdir()
    (default / "shop.yaml").write_text("project: demo\n")
    assert project_location(load_config(default / "shop.yaml"), environ={}) == \
        default / ".shopctl" / "saga.db"


def test_a_saga_log_url_that_is_not_postgresql_is_refused(tmp_path):
    from shopctl.config import load_config
    from shopctl.errors import ConfigError

    shop = tmp_path / "shop.yaml"
    shop.write_text("project: demo\nsaga_log:\n  url: mysql://u:hunter2@db/sagas\n")
    with pytest.raises(ConfigError) as failure:
        load_config(shop)
    text = str(failure.value) + str(getattr(failure.value, "message", ""))
    assert "postgresql://" in text and "hunter2" not in text
