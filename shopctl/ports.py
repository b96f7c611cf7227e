"""Who holds a TCP port on this machine, asked before a runtime tries to take it.

Both runtimes publish services on fixed host ports; a port taken by someone else fails
late and cryptically ("port is already allocated"). These helpers let the caller fail
early with the port and, on Linux, the process holding it.

Contract:
- `is_port_free(host, port)` is True when a listener could bind host:port right now.
  It is a snapshot: the port may be taken a moment later.
- `port_holder(port)` describes the process listening on that TCP port (any local
  address, IPv4 or IPv6) as "pid 123 (cmdline)", or None when unknown (no listener,
  not Linux, or the process belongs to a user whose /proc we cannot read);
  `listening_pid(port)` is that process's pid alone.
- `PortNeed` is one host port a plan needs, with the shop.yaml setting it comes from
  (what `up` checks before it starts anything: shopctl.orchestrate.check_ports).
"""

from __future__ import annotations

import errno
import os
import socket
from dataclasses import dataclass
from pathlib import Path

_PROC = Path("/proc")
_TCP_LISTEN = "0A"  # the st column of /proc/net/tcp for LISTEN


def is_port_free(host: str, port: int) -> bool:
    """Whether host:port can be bound now (a listener on 0.0.0.0 makes 127.0.0.1 busy too)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR mirrors what servers do: sockets in TIME_WAIT must not count as busy.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


@dataclass(frozen=True)
class PortNeed:
    """A host port that starting `unit` (a service, or an infra part: consul, rabbitmq,
    prometheus) takes, and the shop.yaml setting that says so (services.NAME.port)."""

    port: int
    setting: str
    unit: str


EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_LOWEST_CHOSEN = 10000  # below: well-known and registered ports people configure by hand


def port_to_hand_out(host: str = "127.0.0.1", tries: int = 200) -> int:
    """A port free now, for a process started next to bind (a broker's distribution
    port, a further replica's port). Chosen below the kernel's ephemeral range: a port
    the kernel picks (bind to 0) is one it also gives any process's next outgoing
    connection, which may take it before our process binds it (a broker that loses its
    port exits at start). Falls back to the kernel's pick."""
    import random

    try:
        low = int(EPHEMERAL_RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    if low - 1 > _LOWEST_CHOSEN:
        for _ in range(tries):
            port = random.randint(_LOWEST_CHOSEN, low - 1)
            if is_port_free(host, port):
                return port
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_holder(port: int) -> str | None:
    """'pid N (cmdline)' of the process listening on TCP `port`, or None when unknown."""
    pid = listening_pid(port)
    if pid is None:
        return None
    return f"pid {pid} ({_cmdline(pid)})"


def listening_pid(port: int) -> int | None:
    """The pid of the process listening on TCP `port`, or None when unknown."""
    inodes = _listening_inodes(port)
    if not inodes:
        return None
    return _pid_owning(inodes)


def environ_of(pid: int) -> dict[str, str] | None:
    """The environment `pid` was started with, or None when it cannot be read (gone, or
    another user's)."""
    try:
        raw = (_PROC / str(pid) / "environ").read_bytes()
    except OSError:
        return None
    pairs = (item.decode(errors="replace").partition("=") for item in raw.split(b"\0") if item)
    return {key: value for key, _, value in pairs}


def _listening_inodes(port: int) -> set[str]:
    """Socket inodes of LISTEN sockets on `port`, from /proc/net/tcp and tcp6."""
    found: set[str] = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = (_PROC / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != _TCP_LISTEN:
                continue
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[9] != "0":
                found.add(fields[9])
    return found


def _pid_owning(inodes: set[str]) -> int | None:
    """The first process with an fd pointing at one of these socket inodes."""
    targets = {f"socket:[{inode}]" for inode in inodes}
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fds = list((entry / "fd").iterdir())
        except OSError:  # the process ended, or it is not ours to look at
            continue
        for fd in fds:
            try:
                if os.readlink(fd) in targets:
                    return int(entry.name)
            except OSError:
                continue
    return None


def _cmdline(pid: int) -> str:
    try:
        raw = (_PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return "?"
    text = raw.replace(b"\0", b" ").decode(errors="replace").strip()
    if len(text) > 120:
        text = text[:117] + "..."
    return text or "?"
