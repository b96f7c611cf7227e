"""Who drives a saga: a token naming this process, and whether a token's process lives.

A saga is driven by one process at a time (`saga run` in one terminal, `saga resume
--all` in another must not both act on it). The saga log records the driver's token
when it takes a saga; another process may take it over only once that process is gone.
The log is a local file, so the driver is a local process: its pid plus its start time
(so a recycled pid does not look like the old driver) say whether it still runs. A
token of another host cannot be checked from here.

The token also names the boot the process ran in: a driver of an earlier boot is gone,
and the machine went down under it, so its last unsynced log records may be lost (see
shopctl.saga.log, synchronous=NORMAL).
"""

from __future__ import annotations

import os
import socket

_HOST = socket.gethostname()


def _boot_id() -> str:
    """This boot's id (Linux), or '-' where the system does not tell."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as boot:
            return boot.read().strip().replace("-", "")[:12] or "-"
    except OSError:
        return "-"


BOOT = _boot_id()


def _stat(pid: int) -> list[str] | None:
    """Fields 3 onwards of /proc/PID/stat (Linux), or None when there is no such file."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            data = stat.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: count after the last ')'.
    return data.rpartition(")")[2].split()


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), or None."""
    fields = _stat(pid)
    return fields[19] if fields and len(fields) > 19 else None  # field 22, starttime


def _state(pid: int) -> str | None:
    """The process's state letter (R, S, D, Z, X, ...), or None."""
    fields = _stat(pid)
    return fields[0] if fields else None  # field 3, state


_token: tuple[int, str] | None = None


def token() -> str:
    """This process, as `host/pid/start/boot`."""
    global _token
    pid = os.getpid()
    if _token is None or _token[0] != pid:  # computed once per process (and per fork)
        _token = (pid, f"{_HOST}/{pid}/{_start_time(pid) or '-'}/{BOOT}")
    return _token[1]


def _parts(owner: str) -> tuple[str, str, str, str]:
    host, pid, start, boot = (owner.split("/") + ["", "", "", ""])[:4]
    return host, pid, start, boot


def earlier_boot(owner: str) -> bool:
    """Whether `owner` ran on this host in an earlier boot (so the machine went down
    while it drove). False when that cannot be told."""
    host, _, _, boot = _parts(owner)
    return host == _HOST and boot not in ("", "-") and BOOT != "-" and boot != BOOT


def describe(owner: str) -> str:
    host, pid, _, _ = _parts(owner)
    return f"process {pid}" if host == _HOST else f"process {pid} on host {host}"


def alive(owner: str) -> bool | None:
    """Whether the process named by `owner` still runs; None when it cannot be told
    (another host, or a token this version cannot read)."""
    host, pid_text, start, _ = _parts(owner)
    if host != _HOST or not pid_text.isdigit():
        return None
    if earlier_boot(owner):
        return False
    pid = int(pid_text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, and belongs to someone else
    if _state(pid) in ("Z", "X"):
        return False  # a zombie (killed, not yet reaped) still answers kill(pid, 0)
    if start and start != "-":
        now = _start_time(pid)
        return now is None or now == start
    return True
