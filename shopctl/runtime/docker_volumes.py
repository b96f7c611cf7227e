"""Data volumes that belong to the unprivileged user a container runs as.

A service runs as SERVICE_UID:SERVICE_GID (shopctl.images.dockerfile) and its image
declares /data as that user's folder. The engine hands a volume that is empty when a
container starts the owner and mode of the image's folder at the mount point, so a new
volume needs nothing more. A volume written by an older shopctl, whose services ran as
root, holds root-owned files the service could not write: `hand_over` gives them to the
service's user before its container first starts.

Contract of `hand_over(client, container_id, image, path, uid, gid, ...)`, for a container
created but not started, with a volume mounted at `path`:
- It asks the engine for the owner of `path` (the first entries of its tar of the folder,
  which the engine makes from a stopped container too; the rest is never read). Owned by
  uid:gid already, or empty: nothing is done, and the call costs one request.
- Otherwise a one-off container of `image` runs as root with the same volumes and no
  network, changes the owner of every entry under `path` that is not uid:gid (symlinks
  themselves, never what they point to; it does not leave the volume's filesystem), and
  only then, when all of that worked, of `path` itself, so an interrupted or failed run is
  simply done again at the next start. Only owners change: no file is written, moved or
  removed, and modes stay as they were (root made folders 0755 and files 0644, so the
  new owner may write them). It returns True.
- A failure raises OperationFailed with the tool's output; the volume keeps its data
  (some owners may have changed) and the caller does not start the container. The
  one-off container is removed either way; carrying the labels given, one orphaned by a
  killed shopctl goes with `down`.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator, Mapping

import docker
import docker.errors
import requests

from shopctl.docker_client import docker_errors
from shopctl.errors import OperationFailed
from shopctl.units import LABEL_ROLE, Progress, no_progress

# Runs as root in the one-off container: $0 is the folder, $1 the owner ("uid:gid"). The
# folder itself is done last, and only when everything in it was: its owner is the mark.
_HAND_OVER = (
    'find "$0" -xdev -mindepth 1 \\( ! -user "${1%:*}" -o ! -group "${1#*:}" \\) '
    '-exec chown -h "$1" {} + && chown "$1" "$0"'
)
_OUTPUT_LINES = 15


def hand_over(
    client: docker.DockerClient,
    container_id: str,
    image: str,
    path: str,
    uid: int,
    gid: int,
    *,
    labels: Mapping[str, str] | None = None,
    subject: str = "",
    progress: Progress = no_progress,
) -> bool:
    """Make the volume at `path` of a created container uid:gid's (see module contract)."""
    with docker_errors(f"reading the owner of {path} in {subject or container_id}"):
        owner, empty = folder_owner(client.api, container_id, path)
    if owner == (uid, gid) or empty:
        return False
    progress(subject, f"giving the files in {path} (owned by {owner[0]}:{owner[1]}, as an "
                      f"older shopctl left them) to the service's user {uid}:{gid}")
    _run_as_root(client, image, [_HAND_OVER, path, f"{uid}:{gid}"], container_id,
                 dict(labels or {}), f"handing {path} of {subject or container_id} over")
    return True


def folder_owner(
    api: docker.APIClient, container_id: str, path: str
) -> tuple[tuple[int, int], bool]:
    """((uid, gid), empty) of the folder `path` in a container, running or not."""
    url = f"{api.base_url}/v{api.api_version}/containers/{container_id}/archive"
    with api.get(url, params={"path": path}, stream=True,
                 headers={"Accept-Encoding": "identity"}) as response:
        try:
            response.raise_for_status()
        except requests.exceptions.HTTPError as exc:
            docker.errors.create_api_error_from_http_exception(exc)  # raises APIError
        # Closing the response when done stops the engine sending the rest.
        stream = io.BufferedReader(_ChunkReader(response.iter_content(64 * 1024)))
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            folder = tar.next()
            if folder is None or not folder.isdir():
                raise OperationFailed(f"{path} in container {container_id[:12]} is no folder")
            return (folder.uid, folder.gid), tar.next() is None


def _run_as_root(
    client: docker.DockerClient,
    image: str,
    script: list[str],
    volumes_of: str,
    labels: dict[str, str],
    doing: str,
) -> None:
    api = client.api
    with docker_errors(doing):
        helper = api.create_container(
            image,
            entrypoint=["sh", "-c"],
            command=script,
            user="0:0",
            labels={**labels, LABEL_ROLE: "volume-owner"},
            network_disabled=True,
            host_config=api.create_host_config(volumes_from=[volumes_of], network_mode="none"),
        )["Id"]
        try:
            api.start(helper)
            code = api.wait(helper)["StatusCode"]
            if code != 0:
                output = api.logs(helper).decode(errors="replace").strip().splitlines()
                raise OperationFailed(
                    f"{doing} failed (exit {code}); only owners change, the data is intact",
                    hint="\n".join(output[-_OUTPUT_LINES:]) or None,
                )
        finally:
            try:
                api.remove_container(helper, force=True)
            except docker.errors.APIError:
                pass  # gone already


class _ChunkReader(io.RawIOBase):
    """A readable file over an iterator of byte chunks."""

    def __init__(self, chunks: Iterator[bytes]):
        self._chunks = chunks
        self._left = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        while not self._left:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._left = chunk
        count = min(len(buffer), len(self._left))
        buffer[:count] = self._left[:count]
        self._left = self._left[count:]
        return count
