"""Content hashes that say "this changed" without building or starting anything.

A service's fingerprint covers its code folder, the shared service library and the
protobuf contracts, so `up` can tell unchanged services from changed ones in
milliseconds. Files that never affect a running service (caches, local data, generated
stubs, editors' swap files) are skipped, by the same rules the image build and
`shopctl dev` use (shopctl.ignore).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from shopctl.ignore import ignored_name


def iter_files(root: Path) -> Iterable[Path]:
    """Every file under root that belongs to the source, in a stable order."""
    if root.is_file():
        yield root
        return
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not ignored_name(d, is_dir=True))
        for name in sorted(filenames):
            if not ignored_name(name):
                yield Path(dirpath) / name


def tree_hash(roots: Iterable[Path]) -> str:
    """sha256 over relative paths, modes and contents of every file under the roots."""
    digest = hashlib.sha256()
    for root in roots:
        root = Path(root)
        if not root.exists():
            digest.update(f"missing:{root.name}\0".encode())
            continue
        for path in iter_files(root):
            rel = path.relative_to(root.parent).as_posix()
            digest.update(rel.encode() + b"\0")
            digest.update(b"x" if os.access(path, os.X_OK) else b"-")
            digest.update(path.read_bytes())
            digest.update(b"\0")
    return digest.hexdigest()


def data_hash(data: Any) -> str:
    """sha256 of JSON-able data in a canonical form."""
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()
