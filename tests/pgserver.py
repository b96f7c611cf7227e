"""A real PostgreSQL server in a temp folder, for tests and benchmarks: `initdb` and
`pg_ctl start` on a free port of 127.0.0.1, trust authentication for a superuser
`shopctl`, torn down (immediate stop, folder removed) by `stop()`. `halt()` and
`resume()` take it down and bring it back with its data, as a crash and a restart of
the database host would.

The binaries are looked for on the PATH, then under /usr/lib/postgresql/*/bin (Debian's
`postgresql` package, which `make system` installs where they are missing). initdb
refuses to run as root: as root, the server runs as the `postgres` user (created as a
system user when missing).
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

SERVER_USER = "postgres"


def find_binary(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit()
                        else 0)
    if candidates:
        return candidates[-1]
    raise FileNotFoundError(f"{name} not found on the PATH nor under /usr/lib/postgresql/*/bin: "
                            f"run `make system` (scripts/install-system.sh postgresql)")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _as_server_user() -> list[str]:
    """The command prefix that runs a PostgreSQL binary as a user initdb accepts."""
    if os.geteuid() != 0:
        return []
    try:
        import pwd

        pwd.getpwnam(SERVER_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                        SERVER_USER], check=True, capture_output=True)
    return ["runuser", "-u", SERVER_USER, "--"]


class PgServer:
    """One PostgreSQL server. `durable=False` (tests) turns fsync off: it is fast and a
    test never pulls the power; benchmarks keep the defaults."""

    def __init__(self, *, durable: bool = True):
        self.durable = durable
        self.port = 0
        self.folder: Path | None = None

    def start(self) -> PgServer:
        prefix = _as_server_user()
        self.folder = Path(tempfile.mkdtemp(prefix="shopctl-pg-"))
        self.folder.chmod(0o755)
        if prefix:
            shutil.chown(self.folder, SERVER_USER)
        data = self.folder / "data"
        subprocess.run([*prefix, find_binary("initdb"), "-D", str(data), "-U", "shopctl",
                        "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"],
                       check=True, capture_output=True, timeout=120)
        options = ["-p {port}", f"-k {self.folder}", "-c listen_addresses=127.0.0.1",
                   "-c max_connections=200"]
        if not self.durable:
            options += ["-c fsync=off", "-c full_page_writes=off"]
        self._options = " ".join(options)
        for _ in range(5):  # a port taken between the probe and the bind: another one
            self.port = _free_port()
            started = self._pg_ctl_start()
            if started.returncode == 0:
                return self
        raise RuntimeError(f"PostgreSQL did not start: {started.stderr}\n"
                           f"{(self.folder / 'server.log').read_text()[-2000:]}")

    def _pg_ctl_start(self) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*_as_server_user(), find_binary("pg_ctl"), "-D", str(self.folder / "data"), "-w",
             "-t", "60", "-l", str(self.folder / "server.log"),
             "-o", self._options.format(port=self.port), "start"],
            capture_output=True, text=True, timeout=120)

    def halt(self) -> None:
        """Stop the server at once (no shutdown checkpoint, clients cut off) and keep its
        data: what a crash of the database host does."""
        subprocess.run([*_as_server_user(), find_binary("pg_ctl"), "-D",
                        str(self.folder / "data"), "-m", "immediate", "-w", "stop"],
                       check=True, capture_output=True, timeout=60)

    def resume(self) -> None:
        """Start a halted server again, on the same port and with its data."""
        started = self._pg_ctl_start()
        if started.returncode != 0:
            raise RuntimeError(f"PostgreSQL did not start again: {started.stderr}\n"
                               f"{(self.folder / 'server.log').read_text()[-2000:]}")

    def url(self, database: str = "postgres", password: str | None = None) -> str:
        user = "shopctl" if password is None else f"shopctl:{password}"
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    def new_database(self, password: str | None = None) -> str:
        """A fresh, empty database; its url."""
        import psycopg

        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name, password)

    def stop(self) -> None:
        if self.folder is None:
            return
        subprocess.run([*_as_server_user(), find_binary("pg_ctl"), "-D",
                        str(self.folder / "data"), "-m", "immediate", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder = None

    def __enter__(self) -> PgServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
