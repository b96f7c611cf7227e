"""Root filesystems from Debian packages, turned into images without a registry.

The machines this runs on have no container registry, so base images are made the way
distributions make them: `debootstrap` a minimal Debian into a folder, then stream that
folder as a tar into the engine's import endpoint (`docker import`).

Contract:
- `bootstrap(target, packages, ...)` fills the empty folder `target` with a minbase
  Debian bookworm plus `packages`; .debs are kept in the cache so the next run does not
  download them again. Needs root and the debootstrap binary; raises RuntimeUnavailable
  when either is missing and OperationFailed (with the end of debootstrap's log) when it
  fails.
- `import_rootfs(client, rootfs, name, changes)` makes image `name` from the folder,
  applying Dockerfile-like `changes` (ENV, CMD, USER, WORKDIR, EXPOSE), returns its id.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import docker

from shopctl.docker_client import docker_errors
from shopctl.errors import OperationFailed, RuntimeUnavailable
from shopctl.images.cache import cache_path
from shopctl.units import Progress, no_progress

SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
_SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
_SOURCES_LIST = Path("/etc/apt/sources.list")
_INSTALL_HINT = "install it with `make system` (scripts/install-system.sh debootstrap)"


def debian_mirror() -> str:
    """The Debian mirror this host's apt uses (deb822 or one-line format), else the default.

    Using the host's own mirror matters: on these machines it may be the only one reachable.
    """
    try:
        for line in _SOURCES.read_text().splitlines():
            if line.startswith("URIs:"):
                for uri in line.split()[1:]:
                    if "security" not in uri:
                        return uri
    except OSError:
        pass
    try:
        for line in _SOURCES_LIST.read_text().splitlines():
            match = re.match(r"\s*deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+bookworm\s", line)
            if match:
                return match.group(1)
    except OSError:
        pass
    return DEFAULT_MIRROR


def bootstrap(
    target: Path,
    packages: Sequence[str],
    *,
    subject: str = "",
    progress: Progress = no_progress,
) -> None:
    """debootstrap --variant=minbase bookworm into `target` with `packages` included."""
    tool = shutil.which("debootstrap") or (
        "/usr/sbin/debootstrap" if Path("/usr/sbin/debootstrap").exists() else None
    )
    if tool is None:
        raise RuntimeUnavailable("debootstrap is not installed", hint=_INSTALL_HINT)
    if os.geteuid() != 0:
        raise RuntimeUnavailable(
            "building a base image needs root (debootstrap creates device files and chroots)",
            hint="run `sudo shopctl up` once to build it, or set infra.base_image "
            "to an image your registry provides",
        )
    mirror = debian_mirror()
    debs = cache_path("debootstrap", SUITE)
    command = [
        tool,
        "--variant=minbase",
        f"--include={','.join(packages)}",
        f"--cache-dir={debs}",
        SUITE,
        str(target),
        mirror,
    ]
    progress(subject, f"debootstrap {SUITE} from {mirror} (+{', '.join(packages)})")
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        log = target / "debootstrap" / "debootstrap.log"
        detail = log.read_text(errors="replace") if log.exists() else result.stdout + result.stderr
        tail = "\n".join(detail.strip().splitlines()[-20:])
        raise OperationFailed(
            f"debootstrap of {SUITE} with {', '.join(packages)} failed (exit {result.returncode})",
            hint=f"mirror {mirror}; last lines:\n{tail}",
        )
    _trim(target)


def _trim(rootfs: Path) -> None:
    """Drop what an image never needs: downloaded .debs and apt's package lists."""
    for folder in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for entry in (rootfs / folder).glob("*"):
            if entry.is_file() and entry.name != "lock":
                entry.unlink()


def import_rootfs(
    client: docker.DockerClient, rootfs: Path, name: str, changes: Sequence[str]
) -> str:
    """`tar -C rootfs -c . | docker import --change ... - name`; returns the image id."""
    repository, _, tag = name.rpartition(":")
    if not repository:  # "name" without a tag
        repository, tag = name, "latest"
    # GNU tar rather than tarfile: it keeps device nodes, hard links and xattrs exactly.
    # stderr goes to a file: a pipe nobody reads could fill up and stall tar.
    with tempfile.TemporaryFile() as tar_errors:
        tar = subprocess.Popen(
            ["tar", "--numeric-owner", "-C", str(rootfs), "-c", "."],
            stdout=subprocess.PIPE,
            stderr=tar_errors,
        )
        assert tar.stdout is not None
        try:
            with docker_errors(f"importing {name}"):
                client.api.import_image(
                    src=tar.stdout,
                    repository=repository,
                    tag=tag,
                    changes=list(changes),
                    stream_src=True,
                )
        finally:
            tar.stdout.close()  # if the import failed, tar gets SIGPIPE instead of blocking
            code = tar.wait()
        tar_errors.seek(0)
        err = tar_errors.read().decode(errors="replace").strip()
    # GNU tar exits 1 for "file changed as we read it", harmless here; 2 is fatal.
    if code >= 2:
        raise OperationFailed(f"packing the root filesystem of {name} failed: {err}")
    with docker_errors(f"importing {name}"):
        return client.images.get(name).id
