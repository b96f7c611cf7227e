"""The one place scaffolding writes to disk.

Contract:
- `existing(root, files)` lists the targets already present (callers refuse on them).
- `write_files(root, files, force)` refuses, writing nothing, when any target exists and
  force is False; each file is written to a temporary sibling and renamed into place, so
  a reader never sees half a file.
- `staged(path, text)` writes `text` next to `path` and yields a Staged whose commit()
  atomically replaces `path`; without commit() the temporary file is removed. Callers
  use the staged file to validate before anything visible changes.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from shopctl.errors import UsageError
from shopctl.scaffold.render import File


def existing(root: Path, files: Iterable[File]) -> list[File]:
    return [f for f in files if (root / f.path).exists()]


def write_files(root: Path, files: list[File], *, force: bool = False) -> None:
    clashes = [] if force else existing(root, files)
    if clashes:
        listed = ", ".join(str(f.path) for f in clashes)
        raise UsageError(f"refusing to overwrite {listed}", hint="use --force to overwrite")
    for file in files:
        target = root / file.path
        target.parent.mkdir(parents=True, exist_ok=True)
        _replace(target, file.content, 0o755 if file.executable else 0o644)


@dataclass
class Staged:
    temp: Path
    target: Path
    committed: bool = False

    def commit(self) -> None:
        os.replace(self.temp, self.target)
        self.committed = True


@contextmanager
def staged(path: Path, text: str) -> Iterator[Staged]:
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    temp = _write_temp(path, text, mode)
    stage = Staged(temp, path)
    try:
        yield stage
    finally:
        if not stage.committed:
            temp.unlink(missing_ok=True)


def _replace(target: Path, text: str, mode: int) -> None:
    os.replace(_write_temp(target, text, mode), target)


def _write_temp(target: Path, text: str, mode: int) -> Path:
    # Same folder as the target: os.replace is atomic only within one file system.
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
            out.write(text)
        os.chmod(name, mode)
    except BaseException:
        os.unlink(name)
        raise
    return Path(name)
