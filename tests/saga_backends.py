"""Fixtures that run a saga-log test against each backend: the SQLite file and a real
PostgreSQL server (started once per session by tests.pgserver, a fresh database per
test). Loaded from the root conftest.py.

    def test_x(open_saga_log):          # runs twice: [sqlite] and [postgresql]
        with open_saga_log() as log: ...

`open_saga_log(**options)` opens another SagaStore on the same log each call (another
driver of the same process, or the next process); `saga_log_location` is where it is.
"""

from __future__ import annotations

import pytest

BACKENDS = ("sqlite", "postgresql")
# Short, so tests that wait for a dead driver's lease to run out stay quick.
TEST_LEASE = 1.0


@pytest.fixture(scope="session")
def pg_server():
    from tests.pgserver import PgServer

    server = PgServer(durable=False).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=BACKENDS)
def saga_backend(request) -> str:
    return request.param


@pytest.fixture
def saga_log_location(saga_backend, tmp_path, request):
    if saga_backend == "sqlite":
        return tmp_path / "saga.db"
    return request.getfixturevalue("pg_server").new_database()


@pytest.fixture
def open_saga_log(saga_log_location):
    from shopctl.saga.store import open_log

    opened = []

    def open_(**options):
        options.setdefault("lease", TEST_LEASE)
        log = open_log(saga_log_location, **options)
        opened.append(log)
        return log

    yield open_
    for log in opened:
        log.close()


def as_if_driven_before_a_reboot(log, saga_id: str) -> None:
    """Make the saga's row say its driver was a NORMAL one that the machine (SQLite: the
    host; PostgreSQL: the database server) lost under it, with its lease run out."""
    from shopctl.saga import owner

    host, pid, start, _ = owner.token().split("/")
    earlier = f"{host}/{pid}/{start}/0123456789ab"
    if hasattr(log, "_writer"):  # SQLite
        log._conn.execute("UPDATE sagas SET owner = ? WHERE id = ?", (earlier, saga_id))
    else:
        with log._lock:
            log._conn.execute(
                "UPDATE sagas SET owner = %s, owner_boot = owner_boot - 1, lease_until = 0"
                " WHERE id = %s", (earlier + "/gone", saga_id))


def owner_of(log, saga_id: str) -> str | None:
    """The driver the saga's row names."""
    if hasattr(log, "_writer"):  # SQLite
        return log._conn.execute("SELECT owner FROM sagas WHERE id = ?",
                                 (saga_id,)).fetchone()["owner"]
    with log._lock:
        return log._conn.execute("SELECT owner FROM sagas WHERE id = %s",
                                 (saga_id,)).fetchone()["owner"]
