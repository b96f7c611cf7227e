"""The one set of rules for files that are not a service's source.

The code hash `up` plans with (shopctl.fingerprint), the files a service image is built
from (shopctl.images.sources) and the changes `shopctl dev` reacts to all use these
rules, so an editor's swap file neither recreates a container whose image stays the
same nor reloads a service.

Ignored: caches and virtualenvs, local state and data, what builds generate
(`generated/`, `*.egg-info`), version control, hidden folders, and the files editors
and tools leave beside a file while it is edited (vim swap and probe files, emacs lock
and autosave files, `~` backups), plus SQLite files and logs.
"""

from __future__ import annotations

from pathlib import Path

IGNORED_DIRS = frozenset({
    "__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".git", ".hg", ".svn",
    ".venv", "venv", "data", "generated", "node_modules", ".shopctl", ".idea", ".vscode",
})
IGNORED_SUFFIXES = (
    ".pyc", ".pyo", ".egg-info",
    ".swp", ".swo", ".swx", ".swpx", "~", ".tmp", ".bak", ".orig",
    ".db", ".db-wal", ".db-shm", ".db-journal", ".sqlite", ".log",
)
IGNORED_NAMES = frozenset({"4913", ".DS_Store", "Thumbs.db"})  # 4913: vim's write probe


def ignored_name(name: str, is_dir: bool = False) -> bool:
    """Whether a file or folder called `name` is never source."""
    if is_dir:
        return name in IGNORED_DIRS or name.startswith(".") or name.endswith(".egg-info")
    return (name in IGNORED_NAMES or name.endswith(IGNORED_SUFFIXES)
            or name.startswith(".#")  # emacs lock file
            or (name.startswith("#") and name.endswith("#"))  # emacs autosave
            or (name.startswith(".") and name.endswith((".swp", ".swo", ".swx"))))


def ignored(relative: Path | str, is_dir: bool = False) -> bool:
    """Whether a path relative to a watched or hashed root is not source: its own name
    (a folder's when `is_dir`), or any folder on the way to it, is ignored."""
    parts = Path(relative).parts
    if not parts:
        return False
    return (any(ignored_name(part, is_dir=True) for part in parts[:-1])
            or ignored_name(parts[-1], is_dir))
