"""Small, shared conversations with the engine about images: exists, id, build.

Contract of `build_from_context`: sends a ready build context (a tar file with a
Dockerfile at its root) to the engine's classic builder, reports each "Step i/n" through
`progress`, and returns the new image id. A failure raises OperationFailed naming the
failing step and carrying the last lines of its output, because the engine's own error
("returned a non-zero code: 1") says nothing about why.

Cancellation: with a `cancel` event, the build's output is read in a daemon thread and
the event is looked at every CANCEL_POLL seconds. Once it is set, the container the
engine runs the current step in (" ---> Running in <id>") is removed with force, which
fails that step and so ends the build (forcerm=True has the engine remove what is left);
containers of steps the engine still starts within CANCEL_GRACE are removed the same
way; then `Cancelled` is raised. Nothing of an interrupted build is left behind.
"""

from __future__ import annotations

import queue
import re
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping
from typing import IO

import docker
import docker.errors

from shopctl.docker_client import docker_errors
from shopctl.errors import Cancelled, OperationFailed
from shopctl.units import Progress, no_progress

_TAIL_LINES = 25
CANCEL_POLL = 0.1  # seconds between looks at the cancel event while a step is silent
CANCEL_GRACE = 1.0  # seconds a cancelled build gets to end once its step's container is gone
_RUNNING_IN = re.compile(r"^\s*---> Running in ([0-9a-f]{12,64})\s*$")
_END = object()


def image_id(client: docker.DockerClient, name: str) -> str | None:
    """The id of the local image `name`, or None when the engine does not have it."""
    with docker_errors(f"looking up image {name}"):
        try:
            return client.images.get(name).id
        except docker.errors.ImageNotFound:
            return None


def build_from_context(
    client: docker.DockerClient,
    context: IO[bytes],
    tag: str,
    *,
    labels: Mapping[str, str] | None = None,
    subject: str = "",
    progress: Progress = no_progress,
    cancel: threading.Event | None = None,
) -> str:
    """Build `context` (an open tar file positioned at 0) as `tag`; return the image id.
    Raises Cancelled, having removed the build's containers, once `cancel` is set."""
    tail: deque[str] = deque(maxlen=_TAIL_LINES)
    step = "(before the first step)"
    image: str | None = None
    with docker_errors(f"building {tag}"):
        events = client.api.build(
            fileobj=context,
            custom_context=True,
            tag=tag,
            labels=dict(labels or {}),
            rm=True,
            forcerm=True,  # no stopped intermediate containers left behind by failed steps
            decode=True,
        )
        if cancel is not None:
            events = _cancellable(client, events, cancel)
        for event in events:
            if "error" in event:
                raise OperationFailed(
                    f"building {tag} failed at {step}: {event['error'].strip()}",
                    hint="last output of that step:\n" + "\n".join(tail) if tail else None,
                )
            text = event.get("stream", "")
            for line in text.splitlines():
                line = line.rstrip()
                if not line:
                    continue
                if line.startswith("Step "):
                    step = line
                    tail.clear()
                    progress(subject, line)
                else:
                    tail.append(line)
            aux = event.get("aux")
            if isinstance(aux, dict) and "ID" in aux:
                image = aux["ID"]
    if image is None:  # old engines only report "Successfully built <id>"
        image = image_id(client, tag)
    if image is None:
        raise OperationFailed(f"building {tag} reported success but produced no image")
    return image


def _cancellable(
    client: docker.DockerClient, events: Iterator[dict], cancel: threading.Event
) -> Iterator[dict]:
    """`events`, read in a daemon thread so that a silent step (a long RUN) does not keep
    the caller from seeing `cancel`; see the module docstring for what cancelling does."""
    inbox: queue.Queue = queue.Queue()

    def read() -> None:
        try:
            for event in events:
                inbox.put(event)
        except BaseException as exc:  # noqa: BLE001 - handed to the consuming thread
            inbox.put(exc)
        finally:
            inbox.put(_END)

    threading.Thread(target=read, name="shopctl-build-read", daemon=True).start()
    steps: list[str] = []  # containers the engine ran steps in, newest last

    def next_item(timeout: float):
        try:
            item = inbox.get(timeout=timeout)
        except queue.Empty:
            return None
        if isinstance(item, dict):
            for line in item.get("stream", "").splitlines():
                found = _RUNNING_IN.match(line)
                if found:
                    steps.append(found.group(1))
        return item

    while not cancel.is_set():
        item = next_item(CANCEL_POLL)
        if item is None:
            continue
        if item is _END:
            return
        if isinstance(item, BaseException):
            raise item
        yield item
    # Cancelled: end the current step by removing its container, then any the engine
    # starts before it notices the build failed.
    removed: set[str] = set()
    deadline = time.monotonic() + CANCEL_GRACE
    while True:
        for container in [c for c in steps if c not in removed]:
            removed.add(container)
            _remove_quietly(client, container)
        if time.monotonic() >= deadline:
            break
        item = next_item(min(CANCEL_POLL, max(0.0, deadline - time.monotonic())))
        if item is _END or isinstance(item, BaseException):
            for container in [c for c in steps if c not in removed]:
                _remove_quietly(client, container)
            break
    raise Cancelled("build cancelled")


def _remove_quietly(client: docker.DockerClient, container: str) -> None:
    try:
        client.api.remove_container(container, force=True)
    except docker.errors.APIError:
        pass  # gone already (the engine's forcerm), or never created
