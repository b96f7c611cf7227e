"""What the state folder does when the world refuses a write (issue 12, items 9 and 10):
a ProjectStateError naming the path, from state.py itself and from the CLI's last
resort; and the runtime record, written only once the runtime can hold something.

The real read-only folders are in tests/acceptance/test_readonly_project.py; here the
refusals are injected, to reach each branch."""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path

import pytest

from shopctl import state as state_mod
from shopctl.errors import ProjectStateError
from shopctl.runtime import select
from shopctl.state import ProjectState, refused, write_atomic, write_new


def _eacces(*args, **kwargs):
    raise PermissionError(errno.EACCES, "Permission denied", args[0] if args else None)


def test_refused_names_the_path_and_says_what_to_do(tmp_path):
    target = tmp_path / ".shopctl"
    error = refused(PermissionError(errno.EACCES, "Permission denied", str(target)))
    assert isinstance(error, ProjectStateError) and error.exit_code == 1
    assert error.message == f"cannot create {target}: permission denied"
    assert f"make {tmp_path} writable by this user" in error.hint
    assert f"{target} holds this project's state" in error.hint

    readonly = refused(OSError(errno.EROFS, "Read-only file system", str(target)))
    assert readonly.message == f"cannot create {target}: read-only file system"
    assert "read-only file system: remount it read-write" in readonly.hint


def test_refused_leaves_other_errors_and_other_paths_alone(tmp_path):
    assert refused(FileNotFoundError(errno.ENOENT, "No such file", str(tmp_path))) is None
    outside = PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "shop.yaml"))
    assert refused(outside, anywhere=False) is None
    inside = PermissionError(errno.EACCES, "Permission denied",
                             str(tmp_path / ".shopctl" / "local" / "run" / "x.json"))
    assert refused(inside, anywhere=False) is not None
    assert refused(PermissionError(errno.EACCES, "Permission denied")) is None  # no path


def test_ensure_turns_a_refused_mkdir_into_a_clear_error(tmp_path, monkeypatch):
    ps = ProjectState(tmp_path)
    monkeypatch.setattr(Path, "mkdir", _eacces)
    with pytest.raises(ProjectStateError) as caught:
        ps.ensure(ps.secrets_dir)
    assert caught.value.message == f"cannot create {ps.dir}: permission denied"


def test_ensure_checks_the_folder_is_writable(tmp_path, monkeypatch):
    ps = ProjectState(tmp_path)
    ps.ensure(ps.dir)
    monkeypatch.setattr(os, "access", lambda *a, **k: False)
    with pytest.raises(ProjectStateError) as caught:
        ps.ensure(ps.dir)
    assert caught.value.message == f"cannot write in {ps.dir}: permission denied"


def test_ensure_does_not_chmod_a_folder_already_private(tmp_path, monkeypatch):
    """chmod fails on a read-only file system even when it changes nothing."""
    ps = ProjectState(tmp_path)
    ps.ensure(ps.run_dir)
    monkeypatch.setattr(os, "chmod", _eacces)
    assert ps.ensure(ps.run_dir) == ps.run_dir


@pytest.mark.parametrize("write", [write_atomic, write_new])
def test_writes_turn_a_refusal_into_a_clear_error(tmp_path, monkeypatch, write):
    target = tmp_path / ".shopctl" / "runtime"
    target.parent.mkdir()
    target.write_text("old\n")
    monkeypatch.setattr(tempfile, "mkstemp", _eacces)
    with pytest.raises(ProjectStateError) as caught:
        write(target, "new\n")
    assert caught.value.message == f"cannot write {target}: permission denied"
    assert f"make {target.parent} writable" in caught.value.hint


def test_a_full_disk_says_so(tmp_path, monkeypatch):
    target = tmp_path / ".shopctl" / "runtime"
    target.parent.mkdir()

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(ProjectStateError) as caught:
        write_atomic(target, "x")
    assert caught.value.message == f"cannot create {target}: no space left on device"
    assert "free some space" in caught.value.hint
    assert list(target.parent.iterdir()) == [], "the temp file is removed"


def test_an_unreadable_secret_says_so(tmp_path, monkeypatch):
    ps = ProjectState(tmp_path)
    ps.jwt_secret()
    monkeypatch.setattr(Path, "read_text", _eacces)
    with pytest.raises(ProjectStateError) as caught:
        ps.jwt_secret()
    assert caught.value.message == (
        f"cannot read {ps.secrets_dir / 'jwt_secret'}: permission denied")


def test_cli_last_resort_translates_a_refusal_inside_dot_shopctl(tmp_path, monkeypatch,
                                                                   capsys):
    from shopctl import cli
    from shopctl.cli import app as app_module

    path = tmp_path / ".shopctl" / "local" / "data" / "x" / "plugins"

    def refusing_app(**kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(app_module, "app", refusing_app)
    with pytest.raises(SystemExit) as exited:
        cli.main([])
    assert exited.value.code == 1
    err = capsys.readouterr().err
    assert f"error: cannot create {path}: permission denied" in err
    assert "Traceback" not in err


def test_cli_keeps_the_traceback_of_other_os_errors(tmp_path, monkeypatch):
    from shopctl import cli
    from shopctl.cli import app as app_module

    def failing_app(**kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "elsewhere"))

    monkeypatch.setattr(app_module, "app", failing_app)
    with pytest.raises(PermissionError):
        cli.main([])


# -- the runtime record (item 10) -----------------------------------------------------------


def test_remember_local_writes_a_private_record(tmp_path):
    ps = ProjectState(tmp_path)
    select.remember(ps.dir, "local")
    assert ps.runtime_file.read_text() == "local\n"
    assert select.remembered(ps.dir) == "local"
    assert stat.S_IMODE(ps.dir.stat().st_mode) == 0o700


def test_remember_docker_without_an_engine_records_nothing(tmp_path, monkeypatch):
    ps = ProjectState(tmp_path)
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path / 'nothing.sock'}")
    select.remember(ps.dir, "docker")
    assert not ps.dir.exists()
    assert select.remembered(ps.dir) is None
    name, notice = select.choose("auto", None, ps.dir)
    assert (name, notice is not None) == ("local", True)  # a project that never ran


def test_remember_docker_with_an_engine_records_it(tmp_path, monkeypatch):
    ps = ProjectState(tmp_path)
    monkeypatch.setattr(select, "docker_answers", lambda timeout=2.0: True)
    select.remember(ps.dir, "docker")
    assert select.remembered(ps.dir) == "docker"


def test_a_project_remembered_on_docker_stays_there_without_asking_the_engine(
    tmp_path, monkeypatch
):
    """One engine round trip less per command; a gone engine is the runtime's to report."""
    ps = ProjectState(tmp_path)
    monkeypatch.setattr(select, "docker_answers", lambda timeout=2.0: True)
    select.remember(ps.dir, "docker")
    asked: list[float] = []
    monkeypatch.setattr(select, "docker_answers", lambda timeout=2.0: asked.append(timeout))
    assert select.choose("auto", None, ps.dir) == ("docker", None)
    assert asked == []


def test_remember_the_same_runtime_again_writes_nothing(tmp_path, monkeypatch):
    """So a project whose state exists can be brought up from a read-only folder."""
    ps = ProjectState(tmp_path)
    select.remember(ps.dir, "local")
    monkeypatch.setattr(state_mod, "write_atomic", _eacces)
    monkeypatch.setattr(ProjectState, "ensure", _eacces)
    select.remember(ps.dir, "local")
    assert select.remembered(ps.dir) == "local"
