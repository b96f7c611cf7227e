"""Deterministic build contexts: a tar file written from chosen files and folders.

The engine's classic builder decides whether a COPY step can be reused from the files'
contents and headers, so every header here is normalised (owner root, fixed mtime,
permission bits reduced to "executable or not"). Two contexts with the same files then
produce the same COPY layers, whatever the checkout's timestamps or umask.
"""

from __future__ import annotations

import io
import os
import tarfile
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import IO

_MTIME = 1_600_000_000  # any fixed time; 0 upsets some tools


class ContextTar:
    """A tar file being assembled; `finish()` returns it rewound, ready for the engine."""

    def __init__(self) -> None:
        # Contexts can hold a large wheelhouse: spill to disk beyond a few MB.
        self._file: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024)
        self._tar = tarfile.open(fileobj=self._file, mode="w", format=tarfile.PAX_FORMAT)

    def add_bytes(self, arcname: str, data: bytes, executable: bool = False) -> None:
        info = self._info(arcname, tarfile.REGTYPE, executable)
        info.size = len(data)
        self._tar.addfile(info, io.BytesIO(data))

    def add_file(self, arcname: str, path: Path) -> None:
        info = self._info(arcname, tarfile.REGTYPE, bool(path.stat().st_mode & 0o111))
        info.size = path.stat().st_size
        with open(path, "rb") as handle:
            self._tar.addfile(info, handle)

    def add_tree(self, arcname: str, files: Iterable[tuple[str, Path]]) -> None:
        """Add (relative name, path) pairs under the folder `arcname`."""
        self._tar.addfile(self._info(arcname, tarfile.DIRTYPE, True))
        for relative, path in files:
            self.add_file(f"{arcname}/{relative}", path)

    def finish(self) -> IO[bytes]:
        self._tar.close()
        self._file.seek(0)
        return self._file

    @staticmethod
    def _info(arcname: str, kind: bytes, executable: bool) -> tarfile.TarInfo:
        info = tarfile.TarInfo(arcname)
        info.type = kind
        info.mode = 0o755 if executable or kind == tarfile.DIRTYPE else 0o644
        info.mtime = _MTIME
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        return info


def walk_files(root: Path, skip: Callable[[Path, bool], bool]) -> list[tuple[str, Path]]:
    """Regular files under `root` as sorted (posix relative name, path) pairs.

    `skip(relative_path, is_dir)` prunes files and whole folders (pruned folders are
    never read, so a big data/ costs nothing). Symlinked folders are not entered, so a link
    cannot pull a huge tree into a context; symlinked files are read through.
    """
    found: list[tuple[str, Path]] = []
    for folder, dirs, files in os.walk(root):
        here = Path(folder).relative_to(root)
        dirs[:] = sorted(d for d in dirs if not skip(here / d, True))
        for name in files:
            path = Path(folder, name)
            if not skip(here / name, False) and path.is_file():
                found.append(((here / name).as_posix(), path))
    return sorted(found)


def private_files_tar(folder: str, files: Mapping[str, str | bytes], uid: int = 0,
                      gid: int = 0, mode: int = 0o400) -> bytes:
    """A tar, to extract at `/`, holding `folder` (0500) with one file (0400) per entry,
    owned by uid:gid: how secrets reach a container without its environment (what
    `docker inspect` shows) ever holding them. `mode` 0444 makes a file any user of the
    container may read (and the folder 0555). A text gets a final newline; bytes go in
    as they are."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        parts = folder.strip("/").split("/")
        for depth in range(1, len(parts) + 1):  # every folder on the way, leaf private
            info = tarfile.TarInfo("/".join(parts[:depth]))
            info.type, info.mtime = tarfile.DIRTYPE, _MTIME
            leaf = depth == len(parts)
            info.mode = (0o555 if mode & 0o044 else 0o500) if leaf else 0o755
            info.uid, info.gid = (uid, gid) if leaf else (0, 0)
            tar.addfile(info)
        for name, value in files.items():
            data = value if isinstance(value, bytes) else (value + "\n").encode()
            info = tarfile.TarInfo(f"{'/'.join(parts)}/{name}")
            info.size, info.mode, info.mtime = len(data), mode, _MTIME
            info.uid, info.gid = uid, gid
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()
