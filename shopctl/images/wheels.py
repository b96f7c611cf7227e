"""Wheelhouses: the dependencies of a service image, fetched on the host.

Containers cannot reach PyPI here, so pip runs on the host and the image installs with
`pip install --no-index --find-links /wheels`. A wheelhouse is keyed by the requirement
lines, the target Python (major.minor) and the CPU architecture, and lives in
${SHOPCTL_CACHE}/wheels/<key>; once complete it is reused as is, so requirements
written as ranges resolve once and stay put until they are edited.

Contract of `wheelhouse(requirements, python)`: returns a folder holding wheels for
every requirement and their dependencies, built for CPython `python` on Linux; raises
OperationFailed with pip's last lines when they cannot be fetched.

How: when the host's Python has the same major.minor as the image (the normal case:
the shopctl/python base is Debian's 3.11, like the host), `pip wheel` fetches wheels and
builds any sdist-only package here. Otherwise `pip download` asks for manylinux binary
wheels of the target version, which fails for sdist-only packages, and says so.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import docker
import docker.errors

from shopctl.docker_client import docker_errors
from shopctl.errors import OperationFailed
from shopctl.images.cache import cache_path, file_lock
from shopctl.units import Progress, no_progress

_COMPLETE = ".complete"
_LABEL_PYTHON = "io.shopctl.python"
_HOST_PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"


def wheelhouse(
    requirements: Sequence[str],
    python: str,
    *,
    subject: str = "",
    progress: Progress = no_progress,
) -> Path:
    """The folder of wheels for `requirements` on CPython `python` (e.g. "3.11")."""
    machine = platform.machine()
    key_text = json.dumps([list(requirements), python, machine])
    key = hashlib.sha256(key_text.encode()).hexdigest()[:16]
    folder = cache_path("wheels") / key
    if (folder / _COMPLETE).exists():
        return folder
    with file_lock(f"wheels-{key}"):
        if (folder / _COMPLETE).exists():
            return folder
        progress(subject, f"downloading wheels for Python {python} on the host")
        partial = Path(tempfile.mkdtemp(prefix=f"{key}.", dir=folder.parent))
        try:
            _fetch(requirements, python, machine, partial)
            (partial / _COMPLETE).write_text(key_text + "\n")
            shutil.rmtree(folder, ignore_errors=True)
            # A rename is atomic: readers see no wheelhouse or a complete one.
            partial.rename(folder)
        finally:
            shutil.rmtree(partial, ignore_errors=True)
    return folder


def _fetch(requirements: Sequence[str], python: str, machine: str, into: Path) -> None:
    lines = [line for line in requirements if line.strip()]
    if not lines:
        return
    req_file = into / "requirements.in"
    req_file.write_text("\n".join(lines) + "\n")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    if python == _HOST_PYTHON:
        command = [*pip, "wheel", "--quiet", "--wheel-dir", str(into), "-r", str(req_file)]
    else:
        nodot = python.replace(".", "")
        command = [*pip, "download", "--quiet", "--dest", str(into), "-r", str(req_file)]
        command += ["--only-binary=:all:", "--implementation", "cp", "--python-version", python]
        for abi in (f"cp{nodot}", "abi3", "none"):
            command += ["--abi", abi]
        for tag in ("manylinux_2_28", "manylinux_2_17", "manylinux2014", "linux"):
            command += ["--platform", f"{tag}_{machine}"]
    result = subprocess.run(command, capture_output=True, text=True)
    req_file.unlink()
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
        raise OperationFailed(
            f"fetching the Python dependencies for Python {python} failed",
            hint=f"pip runs on this host and needs PyPI (or PIP_INDEX_URL); it said:\n{tail}",
        )


def image_python(client: docker.DockerClient, image: str) -> str:
    """The major.minor of python3 inside `image`, asking the image itself as a last resort."""
    with docker_errors(f"inspecting {image}"):
        found = client.images.get(image)
    labelled = (found.labels or {}).get(_LABEL_PYTHON)
    if labelled:
        return labelled
    for item in found.attrs.get("Config", {}).get("Env") or []:
        if item.startswith("PYTHON_VERSION="):  # the official python images
            return ".".join(item.split("=", 1)[1].split(".")[:2])
    return _ask_image(client, found.id, image)


def _ask_image(client: docker.DockerClient, image_id: str, image: str) -> str:
    """Run python3 in the image once; the answer is cached per image id on disk."""
    memo = cache_path("python-versions") / image_id.replace(":", "_")
    if memo.exists():
        return memo.read_text().strip()
    probe = "import sys; print('%d.%d' % sys.version_info[:2])"
    with docker_errors(f"asking {image} for its Python version"):
        try:
            out = client.containers.run(image_id, ["python3", "-c", probe], remove=True)
        except docker.errors.ContainerError as exc:
            raise OperationFailed(
                f"base image {image} has no working python3 ({exc.stderr!r})",
                hint="infra.base_image must be a Debian-like image with python3 and venv",
            ) from None
    version = out.decode().strip()
    tmp = memo.with_suffix(f".{os.getpid()}")
    tmp.write_text(version + "\n")
    tmp.replace(memo)
    return version
