"""The Python interpreter the local runtime runs a project's services with.

Services need their requirements (Flask, FastAPI, Nameko, grpcio, ...) and the kit's.
When the Python shopctl runs from already satisfies every one of them (a development
checkout, or a venv the user filled), services run with it: nothing to install. Else the
project gets its own virtualenv in .shopctl/local/venv, filled from the services'
requirements.txt files and the kit's dependencies, and rebuilt only when that set of
requirements changes (a stamp holds its hash). The kit itself is never installed: the
runtime puts it on the services' PYTHONPATH, so editing it needs no reinstall.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

from shopctl.errors import OperationFailed

STAMP = ".requirements.sha256"


def requirement_lines(texts: Iterable[str]) -> list[str]:
    """Every requirement of the given requirements.txt texts, once, in order (comments,
    blank lines and pip options dropped)."""
    seen: dict[str, None] = {}
    for text in texts:
        for line in text.splitlines():
            line = line.split(" #", 1)[0].strip()
            if line and not line.startswith(("#", "-")):
                seen.setdefault(line, None)
    return list(seen)


def unsatisfied(requirements: Iterable[str]) -> list[str]:
    """The requirements this Python's installed distributions do not meet."""
    from importlib import metadata

    from packaging.requirements import InvalidRequirement, Requirement

    missing = []
    for line in requirements:
        try:
            wanted = Requirement(line)
        except InvalidRequirement:
            missing.append(line)  # pip will say what is wrong with it
            continue
        if wanted.marker is not None and not wanted.marker.evaluate():
            continue
        try:
            version = metadata.version(wanted.name)
        except metadata.PackageNotFoundError:
            missing.append(line)
            continue
        if wanted.specifier and not wanted.specifier.contains(version, prereleases=True):
            missing.append(line)
    return missing


def interpreter(requirements: list[str], venv: Path, progress=lambda *_: None,
                python: str = sys.executable) -> str:
    """`python` when it meets `requirements`, else the project venv's interpreter, made
    or refreshed to meet them. OperationFailed naming pip's complaint when it cannot."""
    if not unsatisfied(requirements):
        return python
    digest = hashlib.sha256("\n".join(sorted(requirements)).encode()).hexdigest()
    target = venv / "bin" / "python"
    stamp = venv / STAMP
    if target.exists() and stamp.is_file() and stamp.read_text().strip() == digest:
        return str(target)
    progress("python", f"installing {len(requirements)} service requirements into {venv}")
    if not target.exists():
        _run([python, "-m", "venv", str(venv)], "create the project's virtualenv")
    _run([str(target), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
          *requirements], "install the services' requirements")
    stamp.write_text(digest + "\n")
    return str(target)


def _run(argv: list[str], doing: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=1800, check=False)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise OperationFailed(f"could not {doing}: " + " / ".join(tail),
                              hint="check the services' requirements.txt and that PyPI is "
                                   "reachable")
