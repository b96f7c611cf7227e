"""Where image-building work is kept between runs, and the locks that serialise it.

Everything lives under ${SHOPCTL_CACHE:-~/.cache/shopctl} (never inside a project):
debootstrap's .deb cache, temporary root filesystems, wheelhouses and lock files.

Locks are advisory `flock`s on files under locks/: they serialise work across
processes (two `shopctl up` at once) and are released by the kernel if a process dies,
so a crashed build never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def cache_dir() -> Path:
    """The cache root, created on first use."""
    root = Path(os.environ.get("SHOPCTL_CACHE") or Path.home() / ".cache" / "shopctl")
    root = root.expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    return root


def cache_path(*parts: str) -> Path:
    """A folder under the cache root, created on first use."""
    path = cache_dir().joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def file_lock(name: str) -> Iterator[None]:
    """Hold the lock called `name` (any text, e.g. an image name) until the block ends."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
    path = cache_path("locks") / f"{safe}.lock"
    # Each call opens its own file description, so threads of one process exclude each
    # other as well as separate processes do.
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
