"""The one definition of each kind of readiness check (shopctl.units.Readiness), used
by both runtimes, and the one polling loop they wait with.

HTTP is spoken with the standard library's http.client: these checks run on every
`up`, and neither httpx nor requests is worth importing for a GET on the loopback
(nor should a proxy setting of the user's shell ever apply to it).
"""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Callable

from shopctl import broker
from shopctl.errors import OperationFailed
from shopctl.units import Readiness, Setup

HOST = "127.0.0.1"
POLL = 0.1  # seconds between two checks
SETUP_RETRY = 1.0  # seconds before setup steps that failed run again


def http_get(port: int, path: str, timeout: float = 1.0, host: str = HOST) -> tuple[int, bytes]:
    """(status, body) of GET http://host:port/path; (0, b"") when nothing answers."""
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    except (OSError, http.client.HTTPException):
        return 0, b""
    finally:
        connection.close()


def http_ok(port: int, path: str = "/", timeout: float = 1.0, host: str = HOST) -> bool:
    return http_get(port, path, timeout, host)[0] == 200


def consul_has_leader(port: int, timeout: float = 1.0, host: str = HOST) -> bool:
    """Consul answers and has elected a leader (before that, KV and catalog writes fail)."""
    status, body = http_get(port, "/v1/status/leader", timeout, host)
    try:
        return status == 200 and bool(json.loads(body or b'""'))
    except ValueError:
        return False


def postgres_lets_in(port: int, login: str, host: str = HOST, timeout: float = 2.0) -> bool:
    """PostgreSQL at host:port accepts `login` ("USER:PASSWORD") into its `postgres`
    database: it runs, it is past recovery, and that user's password holds."""
    import psycopg

    user, _, password = login.partition(":")
    try:
        with psycopg.connect(host=host, port=port, user=user, password=password,
                             dbname="postgres", connect_timeout=max(1, int(timeout))):
            return True
    except psycopg.Error:
        return False


def answers(check: Readiness) -> bool:
    """The base of a check: the part that tells something of the right kind listens
    (an AMQP broker for the amqp kinds; the whole check for the others)."""
    if check.kind in ("amqp", "amqp-login"):
        return broker.answers(HOST, check.port)
    return holds(check)


def holds(check: Readiness, host: str = HOST) -> bool:
    """Whether the check holds now, against `host` (where its port is published)."""
    if check.kind == "http":
        return http_ok(check.port, check.path, host=host)
    if check.kind == "consul-leader":
        return consul_has_leader(check.port, host=host)
    if check.kind == "postgres":
        return postgres_lets_in(check.port, check.login, host)
    if check.kind == "amqp":
        return broker.answers(host, check.port)
    if check.kind == "amqp-login":  # the login URI names its own host
        if not broker.answers(host, check.port) or not broker.logs_in(check.login):
            return False
        return not (check.refused and broker.logs_in(check.refused))
    raise ValueError(f"unknown readiness kind {check.kind!r}")


def wait(
    check: Readiness,
    failed: Callable[[], str | None],
    setup: Setup | None = None,
    run_step: Callable[[tuple[str, ...], Setup], tuple[bool, str]] | None = None,
    progress: Callable[[str], None] = lambda message: None,
    what: str = "",
    hint: Callable[[], str] = lambda: "",
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    deadline: float | None = None,
) -> None:
    """Poll `check` until it holds. `failed()` names why the unit cannot become ready
    any more (its process or container stopped), or None. Once the check's base
    answers but the whole does not, `setup`'s steps run through `run_step(argv, setup)`
    -> (done, output), again after each failure, until the check holds or time is up.
    Raises OperationFailed naming `what`, with `hint()` (the unit's last output)."""
    deadline = clock() + check.timeout if deadline is None else deadline
    setup_deadline = deadline if setup is None or setup.timeout is None else min(
        deadline, clock() + setup.timeout)
    told = provisioned = False
    output = ""
    pause = POLL
    while not holds(check):
        if setup is not None and run_step is not None and not provisioned and answers(check):
            if not told and setup.message:
                progress(setup.message)
                told = True
            done = True
            for argv in setup.steps:
                ok, output = run_step(argv, setup)
                if not ok and not (setup.tolerated and setup.tolerated in output):
                    done = False
                    break
            # The broker imports asynchronously: once the steps passed, poll only.
            provisioned = done
            if done and holds(check):
                return
            pause = POLL if done else SETUP_RETRY  # a booting node refuses its CLI a moment
            if not done and clock() > setup_deadline:
                raise OperationFailed(f"{setup.failure or what + ' could not be set up'} "
                                      f"({output.strip()[-300:]})", hint=setup.hint or hint())
        why = failed()
        if why is not None:
            raise OperationFailed(f"{what} {why}", hint=hint())
        if clock() > deadline:
            raise OperationFailed(f"{what} did not become ready within {check.timeout:.0f}s",
                                  hint=hint())
        sleep(pause)
