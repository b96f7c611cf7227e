"""One way to reach the Docker engine, and one place that turns its errors into ours.

Contract:
- `connect()` returns a docker.DockerClient that has answered a ping, or raises
  RuntimeUnavailable telling the user how to start an engine (or to use the local runtime).
- `docker_errors(doing)` is a context manager that re-raises docker/requests errors as
  ShopctlError subclasses whose message says what was being done and what to try.
  ShopctlErrors raised inside pass through untouched.
- `interleave(client, targets, follow, tail)` merges the logs of several containers by
  time (see the section at the end).
"""

from __future__ import annotations

import contextlib
import heapq
import queue
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import docker
import docker.errors
import requests.exceptions

from shopctl.errors import OperationFailed, RuntimeUnavailable, ShopctlError
from shopctl.ports import port_holder
from shopctl.units import LogLine

# Builds and imports stream for minutes without a byte on some steps; the SDK's default
# 60 s read timeout would abort them.
LONG_TIMEOUT = 1800

_START_HINT = (
    "start an engine with `make engines` (or `scripts/start-engines.sh docker`, or "
    "`sudo dockerd`), or run without Docker: `--runtime local` after the command, as in "
    "`shopctl up --runtime local`"
)
# "Bind for 127.0.0.1:8001 failed: port is already allocated" (another container) or
# "listen tcp4 127.0.0.1:8001: bind: address already in use" (another process).
_PORT_TAKEN = re.compile(r":(\d+)(?::|\s+failed).*(?:already allocated|address already in use)")


def connect(timeout: int = LONG_TIMEOUT) -> docker.DockerClient:
    """A client for the engine in DOCKER_HOST (default: the local socket), checked alive."""
    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise RuntimeUnavailable(
            f"the Docker engine does not answer ({_short(exc)})", hint=_START_HINT
        ) from None
    return client


@contextmanager
def docker_errors(doing: str) -> Iterator[None]:
    """Translate engine errors raised while `doing` ("starting shipping") into ShopctlErrors."""
    try:
        yield
    except ShopctlError:
        raise
    except docker.errors.ImageNotFound as exc:
        raise OperationFailed(
            f"{doing}: image not found ({_explanation(exc)})",
            hint="`shopctl up` builds the images it needs; there is no registry here",
        ) from None
    except docker.errors.APIError as exc:
        text = _explanation(exc)
        port = _taken_port(text)
        if port is not None:
            raise port_taken_error(port, doing) from None
        raise OperationFailed(f"{doing}: the Docker engine refused: {text}") from None
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise RuntimeUnavailable(
            f"{doing}: lost the Docker engine ({_short(exc)})", hint=_START_HINT
        ) from None


def port_taken_error(port: int, doing: str, holder: str | None = None) -> OperationFailed:
    """The error for 'host port already in use', naming the holder when we can find it."""
    holder = holder or port_holder(port)
    who = f" by {holder}" if holder else ""
    return OperationFailed(
        f"{doing}: port {port} on 127.0.0.1 is already in use{who}",
        hint=f"stop what holds port {port}, or change the port in shop.yaml",
    )


def _taken_port(text: str) -> int | None:
    match = _PORT_TAKEN.search(text)
    return int(match.group(1)) if match else None


def _explanation(exc: docker.errors.APIError) -> str:
    return str(exc.explanation or exc).strip()


def _short(exc: Exception) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) < 200 else text[:197] + "..."


# ---- container logs ----------------------------------------------------------------------
#
# `interleave(client, targets, follow, tail)` yields LogLines of several containers
# ({service: container name}) oldest first. History is read whole and merged by the
# engine's timestamps; with follow, one thread per container then streams new lines into
# a queue (so the order is arrival order, which is time order to within milliseconds).
# A followed container that stops, restarts or is replaced under the same name is
# re-attached, since=the last line seen. Closing the iterator stops every thread.

_REATTACH_PAUSE = 1.0


def parse_time(text: str) -> float | None:
    """Unix time of an engine timestamp ('2024-05-01T12:00:00.123456789Z'); None for the
    zero time the engine reports for containers that never started."""
    if not text or text.startswith("0001-"):
        return None
    head, _, rest = text.rstrip("Z").partition(".")
    fraction = "".join(ch for ch in rest if ch.isdigit())
    zone = rest[len(fraction) :] or "+00:00"
    try:
        moment = datetime.fromisoformat(f"{head}.{(fraction or '0')[:6]:0<6}{zone}")
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def interleave(
    client: docker.DockerClient, targets: dict[str, str], *, follow: bool, tail: int | None
) -> Iterator[LogLine]:
    # Taken now, not at the first next(): with tail=0 "new lines" means lines from the
    # moment the caller asked, even if it starts iterating a little later.
    opened = time.time()
    return _interleave(client, targets, follow, tail, opened)


def _interleave(
    client: docker.DockerClient,
    targets: dict[str, str],
    follow: bool,
    tail: int | None,
    opened: float,
) -> Iterator[LogLine]:
    last: dict[str, float] = {}
    histories = []
    for service, name in targets.items():
        container = _find(client, name)
        if container is None:
            continue
        with docker_errors(f"reading logs of {service}"):
            raw = container.logs(timestamps=True, tail="all" if tail is None else tail)
        lines = list(_lines(service, raw.decode(errors="replace").splitlines()))
        if lines and lines[-1].timestamp is not None:
            last[service] = lines[-1].timestamp
        histories.append(lines)
    yield from heapq.merge(*histories, key=lambda line: line.timestamp or 0.0)
    if follow:
        since = {service: last.get(service, opened) for service in targets}
        yield from _follow(client, targets, since)


def _follow(
    client: docker.DockerClient, targets: dict[str, str], since: dict[str, float]
) -> Iterator[LogLine]:
    lines: queue.Queue[LogLine] = queue.Queue()
    stop = threading.Event()
    streams: dict[str, Any] = {}  # open streams, closed on exit to unblock their readers
    threads = [
        threading.Thread(
            target=_pump,
            args=(client, service, name, since[service], lines, stop, streams),
            name=f"shopctl-logs-{service}",
            daemon=True,
        )
        for service, name in targets.items()
    ]
    for thread in threads:
        thread.start()
    try:
        while True:
            try:
                yield lines.get(timeout=0.5)
            except queue.Empty:
                continue
    finally:
        stop.set()
        for stream in list(streams.values()):
            with contextlib.suppress(Exception):
                stream.close()


def _pump(
    client: docker.DockerClient,
    service: str,
    name: str,
    since: float,
    out: queue.Queue[LogLine],
    stop: threading.Event,
    streams: dict[str, Any],
) -> None:
    """Stream one container's new lines into `out` until `stop`, re-attaching as needed.

    A container that is not running is read without follow, so the last words of one
    that crashed (or was replaced) between two attaches are not lost.
    """
    while not stop.is_set():
        container = _find_quietly(client, name)
        if container is None:
            stop.wait(_REATTACH_PAUSE)
            continue
        live = container.status in ("running", "restarting")
        try:
            stream = container.logs(stream=True, follow=live, timestamps=True, since=since)
            streams[service] = stream
            pending = ""
            for chunk in stream:
                if stop.is_set():
                    return
                # Chunks follow the container's writes, not lines: keep partial tails.
                pending += chunk.decode(errors="replace")
                *complete, pending = pending.split("\n")
                since = _emit(service, complete, since, out)
            since = _emit(service, [pending] if pending else [], since, out)
        except Exception:  # noqa: BLE001 - a vanished container or a closed stream
            if stop.is_set():
                return
        finally:
            streams.pop(service, None)
        stop.wait(_REATTACH_PAUSE)


def _emit(service: str, raw_lines: list[str], since: float, out: queue.Queue[LogLine]) -> float:
    """Queue the lines newer than `since`; returns the newest timestamp queued."""
    for line in _lines(service, raw_lines):
        if line.timestamp is not None:
            if line.timestamp <= since:
                continue  # `since` is inclusive: this one was already shown
            since = line.timestamp
        out.put(line)
    return since


def _lines(service: str, raw_lines: list[str]) -> Iterator[LogLine]:
    for raw in raw_lines:
        stamp, _, text = raw.partition(" ")
        moment = parse_time(stamp)
        if moment is None:  # not a timestamped line: keep it whole
            yield LogLine(service, raw.rstrip("\r"), None)
        else:
            yield LogLine(service, text.rstrip("\r"), moment)


def _find(client: docker.DockerClient, name: str) -> Any:
    with docker_errors(f"looking up {name}"):
        try:
            return client.containers.get(name)
        except docker.errors.NotFound:
            return None


def _find_quietly(client: docker.DockerClient, name: str) -> Any:
    """Like _find, but a lost engine just means "not there now" (followers retry)."""
    try:
        return client.containers.get(name)
    except (docker.errors.DockerException, requests.exceptions.RequestException):
        return None


def log_tail(container, lines: int = 15) -> str:
    """A container's last log lines, for the hint of an error about it."""
    try:
        text = container.logs(tail=lines).decode(errors="replace").strip()
    except Exception:  # noqa: BLE001 - the tail is a courtesy; the error stands without it
        text = ""
    return f"last lines of its log (docker logs {container.name}):\n{text}" if text else (
        f"its log is empty (docker logs {container.name})")
