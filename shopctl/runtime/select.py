"""Which runtime a command uses.

`auto` keeps a project on the runtime it was brought up with (remembered in the state
dir), otherwise takes docker when an engine answers and falls back to local processes
with a notice. An explicit `--runtime docker` never falls back: the user asked for it. `swarm` is
never chosen by `auto` for a project; one brought up with `--runtime swarm` stays there.

The runtime is recorded by `up` only once it can hold something of the project: a
docker `up` that fails because no engine answers leaves nothing behind, so it records
nothing, and the project stays one that never ran (a later `status` falls back as for
any new project). Once the engine answers, `up` may create the network and infra
containers before it fails, and `down` must find them: from then on docker is recorded.
"""

from __future__ import annotations

from pathlib import Path

from shopctl.runtime.base import Runtime

CHOICES = ("auto", "docker", "local", "swarm")
RECORDED = ("docker", "local", "swarm")


def docker_answers(timeout: float = 2.0) -> bool:
    try:
        import docker

        client = docker.from_env(timeout=timeout)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # any failure to reach the engine means "no engine" here
        return False


def remembered(state_dir: Path) -> str | None:
    from shopctl.state import RUNTIME_FILE_NAME

    try:
        name = (state_dir / RUNTIME_FILE_NAME).read_text().strip()
    except OSError:
        return None
    return name if name in RECORDED else None


def remember(state_dir: Path, name: str) -> None:
    """Record `name` as the runtime of the project whose state folder is `state_dir`,
    unless it cannot hold anything of the project yet (docker with no engine answering).

    Written atomically in the private state folder; a read-only project folder is a
    ProjectStateError naming it (before anything started). Nothing is written when the
    record already says `name`: bringing a project up again does not rewrite it.
    """
    from shopctl.state import ProjectState, write_atomic

    if remembered(state_dir) == name:
        return
    if name == "docker" and not docker_answers():
        return  # `up` is about to fail on the engine: nothing of the project exists there
    state = ProjectState(state_dir.parent)
    state.ensure(state.dir)
    write_atomic(state.runtime_file, name + "\n")


def make_runtime(name: str, config) -> Runtime:
    if name == "docker":
        from shopctl.runtime.docker import DockerRuntime

        return DockerRuntime(config)
    if name == "swarm":
        from shopctl.runtime.swarm import SwarmRuntime

        return SwarmRuntime(config)
    from shopctl.runtime.local import LocalRuntime

    return LocalRuntime()


def choose(choice: str, config, state_dir: Path) -> tuple[str, str | None]:
    """(runtime name, a notice for the user or None)."""
    if choice in RECORDED:
        return choice, None
    previous = remembered(state_dir)
    if previous in RECORDED:
        # Without asking the engine: a project brought up with docker stays there, and
        # if the engine is gone the docker runtime says so, with how to fix it.
        return previous, None
    if docker_answers():
        return "docker", None
    return "local", (
        "no Docker engine answers, so services run as local processes "
        "(start an engine with `make engines`, or pass --runtime docker to insist)"
    )
