"""The project's private state folder, `<config.root>/.shopctl/`, and the files in it.

Layout (every path is derived here, so no other module spells a folder name):

    .shopctl/                     0700, ignored by git (see .gitignore)
      secrets/jwt_secret          0600, the per-project token secret
      secrets/service_key         0600, signs service-to-service credentials
      secrets/rabbitmq_password   0600, the project's RabbitMQ user's password
      secrets/consul/management   0600, the project's Consul management (master) token
      secrets/consul/<name>       0600, the Consul ACL token of a service (or _reader)
      secrets/services/<service>/ 0700, the local runtime's SHOP_SECRETS_DIR of a service
      secrets/consul-acl.hcl      0600, the local Consul agent's ACL config
      secrets/postgres/<service>  0600, the password of a service's database role
      secrets/postgres/_superuser 0600, shopctl's own PostgreSQL superuser's password
      local/run/<unit>.json       the local runtime's supervisor state, one per unit
      local/run/<unit>.spec.json  0600, what the supervisor runs (holds the secret env)
      local/logs/<unit>.log       timestamped output of a unit, across restarts
      local/data/<unit>/          SHOP_DATA_DIR of a local unit; kept by `down`

    /var/lib/shopctl/<folder>-<hash>/<unit>/  (outside; see system_data_dir) the data
                                  of a local unit that runs as another user than root
      local/venv/                 the services' Python, when shopctl's own lacks their
                                  requirements (see shopctl.runtime.pyenv)
      saga.db                     the saga log (written by shopctl.saga)
      runtime                     the runtime the project was brought up with
                                  (shopctl.runtime.select)

Nothing here touches a runtime or the network: creating folders and writing small
files atomically is all this module does.

A folder or file the user cannot create, write or read (a read-only project folder,
another user's `.shopctl`, a full disk) is a ProjectStateError naming the path and what
to do, raised here where the state is touched; `refused()` makes the same error from an
OSError raised on a state path elsewhere (the CLI's last resort).
"""

from __future__ import annotations

import errno
import hashlib
import os
import secrets
import tempfile
from pathlib import Path

from shopctl.errors import ProjectStateError

STATE_DIR_NAME = ".shopctl"
SYSTEM_DATA_ROOT = Path("/var/lib/shopctl")
JWT_SECRET_NAME = "jwt_secret"
SERVICE_KEY_NAME = "service_key"
RUNTIME_FILE_NAME = "runtime"

# Folders hold secrets and environments that carry them: only the owner may list them.
_DIR_MODE = 0o700
_SECRET_MODE = 0o600


# What the world refuses (as opposed to a bug): no permission, a read-only file system,
# no space. Only these become a ProjectStateError; any other OSError keeps its traceback.
_REFUSALS = {
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
}


def refused(exc: OSError, path: Path | str | None = None, *, verb: str = "write",
            anywhere: bool = True) -> ProjectStateError | None:
    """The ProjectStateError for `exc`, raised while shopctl touched `path` (default: the
    exception's own filename) of a project's state; None when `exc` is not a refusal
    (permission, read-only, full disk) or, with anywhere=False, when the path does not
    lie inside a `.shopctl` folder."""
    if exc.errno not in _REFUSALS:
        return None
    target = path if path is not None else exc.filename
    if target is None:
        return None
    target = Path(os.fsdecode(target)).absolute()
    if not anywhere and STATE_DIR_NAME not in target.parts:
        return None
    return _state_error(target, verb, exc.errno)


def _state_error(path: Path, verb: str, code: int) -> ProjectStateError:
    """'cannot VERB PATH: REASON', with a hint that says what the folder is and the fix."""
    reason = _REFUSALS.get(code) or os.strerror(code).lower()
    # os.path's tests, not Path's: they say False where a stat is refused, never raise.
    if verb == "write" and not os.path.lexists(path):
        verb = "create"
    elif verb == "write" and os.path.isdir(path):
        verb = "write in"
    # The folder to fix is the nearest one that exists: where the refusal happened.
    folder = next((p for p in (path, *path.parents) if os.path.isdir(p)), path)
    what = (f"{_state_root(path)} holds this project's state (token secret, saga log, "
            "local runtime files)")
    if code == errno.EROFS:
        fix = (f"{folder} is on a read-only file system: remount it read-write, or work in "
               "a writable copy of the project")
    elif code in (errno.ENOSPC, errno.EDQUOT):
        fix = f"free some space on the disk that holds {folder}"
    elif verb == "read":
        fix = f"let this user ({_user()}) read it, or run as the user who owns it"
    else:
        fix = (f"make {folder} writable by this user ({_user()}), or work in a copy of "
               "the project you can write to")
    return ProjectStateError(f"cannot {verb} {path}: {reason}", hint=f"{what}; {fix}")


def _state_root(path: Path) -> Path:
    """The `.shopctl` folder that holds `path` (or `path` itself)."""
    for candidate in (path, *path.parents):
        if candidate.name == STATE_DIR_NAME:
            return candidate
    return path


def _user() -> str:
    uid = os.geteuid()
    try:
        import pwd

        return f"{pwd.getpwuid(uid).pw_name}, uid {uid}"
    except (ImportError, KeyError):
        return f"uid {uid}"


def _raise_refused(exc: OSError, path: Path, verb: str = "write") -> None:
    error = refused(exc, path, verb=verb)
    if error is not None:
        raise error from None


def write_atomic(path: Path, data: str | bytes, mode: int = 0o644) -> None:
    """Replace `path` with `data` so a reader sees the old file or the new one, never half."""
    tmp = _write_temp(path, data, mode)
    try:
        os.replace(tmp, path)
    except BaseException as exc:
        _unlink(tmp)
        if isinstance(exc, OSError):
            _raise_refused(exc, path)
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
    except OSError as exc:
        _raise_refused(exc, path)
        raise
    finally:
        _unlink(tmp)


def _write_temp(path: Path, data: str | bytes, mode: int) -> str:
    """A fully written, fsynced temp file next to `path`, with `mode` from the start.

    Same folder because rename and link must not cross file systems; the mode is set
    before any byte is written, so a secret is never readable by others, not even for
    an instant; fsync so a crash after the rename cannot leave an empty file.
    """
    payload = data.encode() if isinstance(data, str) else data
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        _raise_refused(exc, path)
        raise
    try:
        os.fchmod(fd, mode)  # mkstemp creates 0600; fchmod makes other modes exact too
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException as exc:
        _unlink(tmp)
        if isinstance(exc, OSError):  # a full disk shows here
            _raise_refused(exc, path)
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
    # mkdir's mode is filtered by the umask and ignored for existing folders. Only when
    # it differs: chmod fails on a read-only file system even when it would change nothing.
    if path.stat().st_mode & 0o7777 != _DIR_MODE:
        os.chmod(path, _DIR_MODE)
    return path


def _check_writable(path: Path) -> None:
    """ProjectStateError unless this process may create files in the folder `path`:
    found here, before a caller (SQLite, a supervisor) fails on it with no path to show."""
    effective = os.access in os.supports_effective_ids
    if os.access(path, os.W_OK | os.X_OK, effective_ids=effective):
        return
    readonly = bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    raise _state_error(path, "write", errno.EROFS if readonly else errno.EACCES)


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

    @property
    def worker_file(self) -> Path:
        """The saga worker's heartbeat (shopctl.saga.worker)."""
        return self.dir / "saga-worker.json"

    @property
    def worker_log(self) -> Path:
        return self.dir / "saga-worker.log"

    @property
    def runtime_file(self) -> Path:
        return self.dir / RUNTIME_FILE_NAME

    @property
    def infra_host_file(self) -> Path:
        """Where the host reaches the project's Consul and RabbitMQ when that is not
        127.0.0.1 (the swarm runtime publishes them on a manager); see infra_host."""
        return self.dir / "infra-host"

    def infra_host(self) -> str:
        """The address of the project's published infra ports: what the last `up`
        recorded, else 127.0.0.1 (docker and local publish there)."""
        try:
            return self.infra_host_file.read_text().strip() or "127.0.0.1"
        except OSError:
            return "127.0.0.1"

    def record_infra_host(self, host: str) -> None:
        """Record `host` for infra_host (removing the record when it is 127.0.0.1)."""
        if host == self.infra_host():
            return
        if host == "127.0.0.1":
            self.infra_host_file.unlink(missing_ok=True)
            return
        self.ensure(self.dir)
        write_atomic(self.infra_host_file, host + "\n")

    # -- per-unit files of the local runtime -----------------------------------------

    def run_file(self, unit: str) -> Path:
        return self.run_dir / f"{unit}.json"

    def spec_file(self, unit: str) -> Path:
        return self.run_dir / f"{unit}.spec.json"

    def log_file(self, unit: str) -> Path:
        return self.logs_dir / f"{unit}.log"

    def data_dir(self, unit: str) -> Path:
        return self.data_root / unit

    def system_data_dir(self, unit: str) -> Path:
        """Where a local unit keeps its data when shopctl runs as root but the unit must
        not (PostgreSQL refuses root): .shopctl is root's alone (0700), so no other user
        can reach a folder inside it. As docker keeps volumes under /var/lib/docker:
        one folder per project folder (its name and a hash of its path), made by the
        unit itself; `down --volumes` removes it."""
        digest = hashlib.sha256(str(self.root).encode()).hexdigest()[:12]
        return SYSTEM_DATA_ROOT / f"{self.root.name}-{digest}" / unit

    def ensure(self, path: Path) -> Path:
        """Create a folder inside the state dir, with it and every folder between 0700,
        and check that files can be created in it: ProjectStateError (naming the folder
        and what to do) when the project folder is read-only, another user's or full."""
        path = Path(path)
        if path != self.dir and self.dir not in path.parents:
            raise ValueError(f"{path} is not inside {self.dir}")
        current = self.dir
        try:
            ensure_private_dir(self.dir)
            for part in path.relative_to(self.dir).parts:
                current = ensure_private_dir(current / part)
        except OSError as exc:
            _raise_refused(exc, Path(os.fsdecode(exc.filename)) if exc.filename else current)
            raise
        _check_writable(path)
        return path

    # -- secrets ---------------------------------------------------------------------

    def jwt_secret(self) -> str:
        """The project's token secret: created once (48 random bytes, url-safe), then reused."""
        return self.secret(JWT_SECRET_NAME, lambda: secrets.token_urlsafe(48))

    def service_key(self) -> str:
        """The key services and the saga driver sign and check service-to-service
        credentials with (shopkit.service_auth); apart from the users' token secret, so
        a user token can never pass for a service credential or the reverse."""
        return self.secret(SERVICE_KEY_NAME, lambda: secrets.token_urlsafe(48))

    def consul_token(self, name: str) -> str:
        """A Consul ACL token's secret ID (a UUID, as Consul wants): `management` for
        shopctl's own, a service's name for that service's."""
        import uuid

        return self.secret(f"consul/{name}", lambda: str(uuid.uuid4()))

    def database_password(self, name: str) -> str:
        """A PostgreSQL role's password (shopctl.databases): a service's, or
        `_superuser` for shopctl's own (no service name starts with "_")."""
        return self.secret(f"postgres/{name}", lambda: secrets.token_urlsafe(32))

    def service_secrets_dir(self, service: str) -> Path:
        return self.secrets_dir / "services" / service

    def write_service_secrets(self, service: str, values: dict[str, str]) -> Path:
        """The local runtime's SHOP_SECRETS_DIR of a service: one 0600 file a secret in
        a 0700 folder, and nothing else (a secret no longer given is removed)."""
        folder = self.ensure(self.service_secrets_dir(service))
        # The instances of a service start at once and write the same files: another
        # writer's temporary file (.NAME.*.tmp) is not stale.
        present = {p.name for p in folder.iterdir() if not p.name.startswith(".")}
        for stale in present - set(values):
            _unlink(folder / stale)
        for name, value in values.items():
            write_atomic(folder / name, value + "\n", mode=_SECRET_MODE)
        return folder

    def existing_secret(self, name: str) -> str | None:
        """The secret `secrets/<name>` if it was made; never creates anything (for
        commands that only read, such as `status`)."""
        return _read_secret(self.secrets_dir / name)

    def secret(self, name: str, make) -> str:
        """The secret `secrets/<name>`: created once from `make()`, then reused.

        Created 0600 in a 0700 folder without ever being visible half-written; when two
        first calls race (parallel `shopctl` runs), the first file wins and both return it.
        """
        path = self.secrets_dir / name
        existing = _read_secret(path)
        if existing:
            return existing
        self.ensure(path.parent)
        write_new(path, make() + "\n", mode=_SECRET_MODE)
        value = _read_secret(path)
        assert value, f"{path} is empty right after writing it"
        return value


def _read_secret(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None
    except OSError as exc:  # another user's 0600 secret
        _raise_refused(exc, path, verb="read")
        raise
