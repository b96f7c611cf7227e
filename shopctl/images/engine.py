"""Small, shared conversations with the engine about images: exists, id, build.

Contract of `build_from_context`: sends a ready build context (a tar file with a
Dockerfile at its root) to the engine's classic builder, reports each "Step i/n" through
`progress`, and returns the new image id. A failure raises OperationFailed naming the
failing step and carrying the last lines of its output, because the engine's own error
("returned a non-zero code: 1") says nothing about why.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import IO

import docker
import docker.errors

from shopctl.docker_client import docker_errors
from shopctl.errors import OperationFailed
from shopctl.runtime.base import Progress, no_progress

_TAIL_LINES = 25


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
) -> str:
    """Build `context` (an open tar file positioned at 0) as `tag`; return the image id."""
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
