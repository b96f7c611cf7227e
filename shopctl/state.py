"""The project's private state folder, `<config.root>/.shopctl/`, and the files in it.

Layout (every path is derived here, so no other module spells a folder name):

    .shopctl/                     0700, ignored by git (see .gitignore)
      secrets/jwt_secret          0600, the per-project token secret
      local/run/<unit>.json       the local runtime's supervisor state, one per unit
      local/run/<unit>.spec.json  0600, what the supervisor runs (holds the secret env)
      local/logs/<unit>.log       timestamped output of a unit, across restarts
      local/data/<unit>/          SHOP_DATA_DIR of a local unit; kept by `down`
      local/venv/                 the services' Python, when shopctl's own lacks their
                                  requirements (see shopctl.runtime.pyenv)
      saga.db                     the saga log (written by shopctl.saga)

Nothing here touches a runtime or the network: creating folders and writing small
files atomically is all this module does.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from pathlib import Path

STATE_DIR_NAME = ".shopctl"
JWT_SECRET_NAME = "jwt_secret"

# Folders hold secrets and environments that carry them: only the owner may list them.
_DIR_MODE = 0o700
_SECRET_MODE = 0o600


def write_atomic(path: Path, data: str | bytes, mode: int = 0o644) -> None:
    """Replace `path` with `data` so a reader sees the old file or the new one, never half."""
    tmp = _write_temp(path, data, mode)
    try:
        os.replace(tmp, path)
    except BaseException:
        _unlink(tmp)
        raise


def write_new(path: Path, data: str | bytes, mode: int = 0o644) -> bool:
    """Create `path` with `data` unless it exists; True if this call created it.

    Like write_atomic, but the complete file appears under its name with a hard link,
    which fails when the name is taken: of several racing writers, the first one wins
    and nobody overwrites what another caller may already have read.
    """
    tmp = _write_temp(path, data, mode)
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        _unlink(tmp)


def _write_temp(path: Path, data: str | bytes, mode: int) -> str:
    """A fully written, fsynced temp file next to `path`, with `mode` from the start.

    Same folder because rename and link must not cross file systems; the mode is set
    before any byte is written, so a secret is never readable by others, not even for
    an instant; fsync so a crash after the rename cannot leave an empty file.
    """
    payload = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)  # mkstemp creates 0600; fchmod makes other modes exact too
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        _unlink(tmp)
        raise
    return tmp


def _unlink(path: str | Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def ensure_private_dir(path: Path) -> Path:
    """Create `path` (and parents) if missing and make it 0700; returns `path`."""
    path.mkdir(parents=True, exist_ok=True, mode=_DIR_MODE)
    # mkdir's mode is filtered by the umask and ignored for existing folders.
    os.chmod(path, _DIR_MODE)
    return path


class ProjectState:
    """Paths inside `<root>/.shopctl/`; folders are created on first use, not here."""

    def __init__(self, root: Path | str):
        self.root = Path(root).resolve()
        self.dir = self.root / STATE_DIR_NAME

    def __repr__(self) -> str:
        return f"ProjectState({str(self.root)!r})"

    # -- folders -------------------------------------------------------------------

    @property
    def secrets_dir(self) -> Path:
        return self.dir / "secrets"

    @property
    def local_dir(self) -> Path:
        return self.dir / "local"

    @property
    def venv_dir(self) -> Path:
        return self.local_dir / "venv"

    @property
    def run_dir(self) -> Path:
        return self.local_dir / "run"

    @property
    def logs_dir(self) -> Path:
        return self.local_dir / "logs"

    @property
    def data_root(self) -> Path:
        return self.local_dir / "data"

    @property
    def saga_db(self) -> Path:
        return self.dir / "saga.db"

    # -- per-unit files of the local runtime -----------------------------------------

    def run_file(self, unit: str) -> Path:
        return self.run_dir / f"{unit}.json"

    def spec_file(self, unit: str) -> Path:
        return self.run_dir / f"{unit}.spec.json"

    def log_file(self, unit: str) -> Path:
        return self.logs_dir / f"{unit}.log"

    def data_dir(self, unit: str) -> Path:
        return self.data_root / unit

    def ensure(self, path: Path) -> Path:
        """Create a folder inside the state dir, with it and every folder between 0700."""
        path = Path(path)
        if path != self.dir and self.dir not in path.parents:
            raise ValueError(f"{path} is not inside {self.dir}")
        ensure_private_dir(self.dir)
        current = self.dir
        for part in path.relative_to(self.dir).parts:
            current = ensure_private_dir(current / part)
        return path

    # -- secrets ---------------------------------------------------------------------

    def jwt_secret(self) -> str:
        """The project's token secret: created once (48 random bytes, url-safe), then reused.

        Created 0600 in a 0700 folder without ever being visible half-written; when two
        first calls race (parallel `shopctl` runs), the first file wins and both return it.
        """
        path = self.secrets_dir / JWT_SECRET_NAME
        existing = _read_secret(path)
        if existing:
            return existing
        self.ensure(self.secrets_dir)
        write_new(path, secrets.token_urlsafe(48) + "\n", mode=_SECRET_MODE)
        secret = _read_secret(path)
        assert secret, f"{path} is empty right after writing it"
        return secret


def _read_secret(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None
