"""Which runtime a command uses.

`auto` keeps a project on the runtime it was brought up with (remembered in the state
dir), otherwise takes docker when an engine answers and falls back to local processes
with a notice. An explicit `--runtime docker` never falls back: the user asked for it.
"""

from __future__ import annotations

from pathlib import Path

from shopctl.runtime.base import Runtime

CHOICES = ("auto", "docker", "local")


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
    try:
        name = (state_dir / "runtime").read_text().strip()
    except OSError:
        return None
    return name if name in ("docker", "local") else None


def remember(state_dir: Path, name: str) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / "runtime").write_text(name + "\n")


def make_runtime(name: str, config) -> Runtime:
    if name == "docker":
        from shopctl.runtime.docker import DockerRuntime

        return DockerRuntime(config)
    from shopctl.runtime.local import LocalRuntime

    return LocalRuntime()


def choose(choice: str, config, state_dir: Path) -> tuple[str, str | None]:
    """(runtime name, a notice for the user or None)."""
    if choice in ("docker", "local"):
        return choice, None
    previous = remembered(state_dir)
    if previous == "local":
        return "local", None
    if docker_answers():
        return "docker", None
    if previous == "docker":
        return "docker", None  # let the docker runtime say the engine is gone, with how to fix it
    return "local", (
        "no Docker engine answers, so services run as local processes "
        "(start an engine with `make engines`, or pass --runtime docker to insist)"
    )
