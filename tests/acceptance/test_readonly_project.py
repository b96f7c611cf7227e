"""A project folder shopctl may not write (issue 12, item 9): a command that needs the
project's state (.shopctl/: token secret, saga log, local runtime files) says so in one
`error:` line naming the path, with a hint, and exits 1; no traceback. A command that
only reads (`status`) runs as it does in a writable folder.

The folder is made read-only for real, two ways (tests run as root, for whom chmod stops
nothing), and each way is first proved to refuse a write, so the test fails rather than
passes vacuously if this machine cannot make one:

- "mount": root, with the folder bind-mounted read-only in a private mount namespace
  (`unshare --mount`): EROFS, what a read-only volume or checkout gives;
- "user": an unprivileged user (`setpriv`, uid 65534) on a folder chmod 0555: EACCES, the
  issue's PermissionError.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import REPO, run_shopctl

NOBODY = 65534
WAYS = ("mount", "user")


class Project:
    """A demo project in a folder that `run(..., readonly=True)` sees read-only."""

    def __init__(self, root: Path, way: str):
        self.root = root
        self.way = way

    def run(self, *argv: str, readonly: bool = True, timeout: float = 120
            ) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items()
               if k not in ("SHOPCTL_FILE", "NO_COLOR", "FORCE_COLOR")}
        env["COLUMNS"] = "200"
        folder = str(self.root)
        if self.way == "mount":
            wrapper = [] if not readonly else [
                "unshare", "--mount", "sh", "-c",
                'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"', folder]
        else:
            os.chmod(self.root, 0o555 if readonly else 0o777)
            env["HOME"] = folder
            wrapper = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
        try:
            return subprocess.run([*wrapper, *argv], cwd=self.root, env=env,
                                  capture_output=True, text=True, timeout=timeout)
        finally:
            if self.way == "user":
                os.chmod(self.root, 0o755)

    def shopctl(self, *args: str, readonly: bool = True) -> subprocess.CompletedProcess:
        return self.run(sys.executable, "-m", "shopctl", *args, readonly=readonly)


@pytest.fixture(params=WAYS)
def project(request) -> Iterator[Project]:
    # Not under pytest's tmp_path: its folders are 0700, closed to the unprivileged user.
    base = Path(tempfile.mkdtemp(prefix="shopctl-ro-", dir="/tmp"))
    os.chmod(base, 0o755)
    root = base / "shop"
    done = run_shopctl("init", str(root), "--demo", "--name", "rotest", cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert not (root / ".shopctl").exists()
    for folder, _dirs, _files in os.walk(root):  # readable by the unprivileged user too
        os.chmod(folder, 0o755)
    made = Project(root, request.param)
    probe = made.run("touch", str(root / "probe"))
    assert probe.returncode != 0 and not (root / "probe").exists(), (
        f"could not make a read-only folder the {request.param!r} way on this machine: "
        f"{probe.stderr}")
    yield made
    shutil.rmtree(base, ignore_errors=True)


def assert_one_clear_error(result: subprocess.CompletedProcess, path: Path) -> str:
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    assert result.returncode == 1, output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output
    assert str(path) in errors[0], output
    assert "hint:" in result.stderr, output
    assert len(result.stderr.splitlines()) <= 4, output  # a message, not a dump
    return errors[0]


@pytest.mark.parametrize("command", [["up", "--dry-run"], ["saga", "list"], ["up"]],
                         ids=" ".join)
def test_a_command_that_writes_state_says_which_folder_and_exits_1(project, command):
    result = project.shopctl(*command)
    line = assert_one_clear_error(result, project.root / ".shopctl")
    reason = "read-only file system" if project.way == "mount" else "permission denied"
    assert line == f"error: cannot create {project.root / '.shopctl'}: {reason}", line
    assert not (project.root / ".shopctl").exists()


def test_status_only_reads_so_it_runs_as_in_a_writable_folder(project):
    readonly = project.shopctl("status")
    writable = project.shopctl("status", readonly=False)
    assert "Traceback" not in readonly.stdout + readonly.stderr
    assert not (project.root / ".shopctl").exists(), "status wrote state"
    assert (readonly.returncode, readonly.stdout, readonly.stderr) == (
        writable.returncode, writable.stdout, writable.stderr)


def test_existing_state_in_a_read_only_folder(project):
    """State made while the folder was writable (by root), then the folder turns
    read-only. On a read-only mount, what only reads it (`up --dry-run`, its secret
    there) works and what writes names the folder; for another user the state is
    root's, 0700, so even the secret cannot be read: both name the path."""
    made = project.shopctl("up", "--dry-run", "--runtime", "local", readonly=False)
    assert made.returncode == 0, made.stderr
    state = project.root / ".shopctl"
    secret = state / "secrets" / "jwt_secret"
    assert secret.is_file()
    if project.way == "user":  # made by the unprivileged user: make it root's
        subprocess.run(["chown", "-R", "root:root", str(state)], check=True)
    reason = "read-only file system" if project.way == "mount" else "permission denied"

    plan = project.shopctl("up", "--dry-run", "--runtime", "local")
    if project.way == "mount":
        assert plan.returncode == 0, plan.stdout + plan.stderr
        assert "users" in plan.stdout
    else:
        line = assert_one_clear_error(plan, secret)
        assert line == f"error: cannot read {secret}: {reason}", line

    listed = project.shopctl("saga", "list")
    line = assert_one_clear_error(listed, state)
    assert line == f"error: cannot write in {state}: {reason}", line
    assert not (state / "saga.db").exists()
