"""Which saga log a project uses, and the one interface every backend offers.

Two backends keep the same contract (shopctl.saga.log states it): the SQLite file of
one host (`SagaLog`, the default) and a PostgreSQL database shared by drivers on
several hosts (`PgSagaLog`, shopctl.saga.pglog). The engine, the worker, the outbox
publisher and the CLI only ever see `SagaStore`, and open a log with `open_log`.

Where the log lives, first found wins: SHOPCTL_SAGA_LOG in the environment, then
`saga_log: {url: ...}` in shop.yaml, then .shopctl/saga.db. A location is a
postgresql:// (or postgres://) url, or the path of a SQLite file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from shopctl.saga.location import LEASE_ENV, LOG_ENV, is_postgres, mask

__all__ = ["LEASE_ENV", "LOG_ENV", "SagaStore", "is_postgres", "mask", "open_log"]


class SagaStore(Protocol):
    """What the engine, the worker, the outbox publisher and the CLI use of a saga log.
    Every write is committed before it returns; see shopctl.saga.log for the contract."""

    synchronous: str
    origin: str
    location: str  # where it is, fit to show (a url without its password)

    def close(self) -> None: ...
    def __enter__(self) -> SagaStore: ...
    def __exit__(self, *exc_info: object) -> None: ...
    def create(self, name: str, input: dict[str, Any], definition: dict[str, Any], *,
               idempotency_key: str | None = None, fail_at: str | None = None) -> Any: ...
    def create_with(self, name: str, input: dict[str, Any], definition: dict[str, Any],
                    transitions: Sequence[Any], *, idempotency_key: str | None = None,
                    fail_at: str | None = None) -> Any: ...
    def get(self, saga_id: str) -> Any: ...
    def by_key(self, idempotency_key: str) -> Any: ...
    def list(self, status: str | None = None, limit: int = 100) -> list[Any]: ...
    def set_status(self, saga_id: str, status: str, error: str | None = None) -> None: ...
    def record(self, saga_id: str, step: str, state: str, attempt: int, **fields: Any
               ) -> Any: ...
    def commit(self, saga_id: str, transitions: Sequence[Any], **options: Any) -> list[Any]: ...
    def claim(self, saga_id: str, *, force: bool = False) -> Any: ...
    def release(self, saga_id: str) -> None: ...
    def fresh_events(self, limit: int = 100) -> list[Any]: ...
    def claim_events(self, limit: int = 100, lease: float = ...) -> list[Any]: ...
    def events_published(self, ids: Sequence[int]) -> None: ...
    def event_failed(self, ids: Sequence[int], error: str, retry_in: float) -> None: ...
    def outbox(self, saga_id: str) -> list[Any]: ...
    def unpublished(self) -> int: ...
    def events(self, saga_id: str) -> list[Any]: ...


def open_log(location: str | Path, *, synchronous: str | None = None,
             lease: float | None = None) -> SagaStore:
    """The saga log at `location` (a postgresql:// url, or a SQLite file's path).
    `lease`: how long a driver's claim lasts without renewal (PostgreSQL only)."""
    if is_postgres(location):
        from shopctl.saga.pglog import PgSagaLog  # psycopg only when it is used

        return PgSagaLog(str(location), synchronous=synchronous, lease=lease)
    from shopctl.saga.log import SagaLog

    return SagaLog(location, synchronous=synchronous)


def project_location(config, environ: dict[str, str] | None = None) -> str | Path:
    """Where the saga log of the shop `config` describes lives (see the module doc)."""
    import os

    from shopctl.state import ProjectState

    from_env = (os.environ if environ is None else environ).get(LOG_ENV)
    if from_env:
        if not is_postgres(from_env):
            return Path(from_env)
        return from_env
    if config.saga_log.url:
        return config.saga_log.url
    state = ProjectState(config.root)
    state.ensure(state.dir)
    return state.saga_db


def open_project_log(config, **options: Any) -> SagaStore:
    """open_log for the shop `config` describes."""
    options.setdefault("lease", config.saga_log.lease)
    return open_log(project_location(config), **options)
