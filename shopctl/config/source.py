"""Find and read shop.yaml as text, turning every way a file can be unusable into a problem."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from shopctl.config.problems import ConfigInvalid, ConfigProblem

CONFIG_NAME = "shop.yaml"
MAX_BYTES = 1024 * 1024
_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class Source:
    display: str  # the path as the user should see it in messages
    path: Path  # absolute
    text: str

    @property
    def root(self) -> Path:
        return self.path.parent


def display_name(path: str | os.PathLike[str]) -> str:
    """The path as given; an absolute path under the working directory is shown relative."""
    given = Path(path)
    if given.is_absolute():
        try:
            return str(given.relative_to(Path.cwd()))
        except ValueError:
            return str(given)
    return os.fspath(path)


def find_config(start: str | os.PathLike[str] | None = None, name: str = CONFIG_NAME) -> Path:
    """The nearest `name` in start (default: cwd) or one of its parents."""
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / name
        if candidate.is_file():
            return candidate
    problem = ConfigProblem(name, None, None, "", f"no {name} in {here} or any parent folder")
    raise ConfigInvalid(
        name,
        [problem],
        header=f"cannot find {name}:",
    )


def _fail(
    display: str,
    message: str,
    hint: str | None = None,
    line: int | None = None,
    col: int | None = None,
) -> NoReturn:
    raise ConfigInvalid(
        display,
        [ConfigProblem(display, line, col, "", message, hint)],
        header=f"cannot read {display}:",
    )


def read_source(path: str | os.PathLike[str], max_bytes: int = MAX_BYTES) -> Source:
    display = display_name(path)
    absolute = Path(os.path.abspath(path))
    try:
        info = os.stat(absolute)
    except FileNotFoundError:
        _fail(display, "file not found", f"create it, or give the path of your {CONFIG_NAME}")
    except OSError as exc:
        _fail(display, f"cannot access the file: {exc.strerror or exc}")
    if stat.S_ISDIR(info.st_mode):
        hint = None
        if (absolute / CONFIG_NAME).is_file():
            hint = f"did you mean {os.path.join(display, CONFIG_NAME)}?"
        _fail(display, "is a directory, not a file", hint)
    if not stat.S_ISREG(info.st_mode):
        _fail(display, "is not a regular file")
    if info.st_size > max_bytes:
        _fail(display, f"file is too large ({info.st_size} bytes; the limit is {max_bytes})")
    try:
        with open(absolute, "rb") as handle:
            data = handle.read(max_bytes + 1)
    except OSError as exc:
        _fail(display, f"cannot read the file: {exc.strerror or exc}")
    if len(data) > max_bytes:
        _fail(display, f"file is too large (more than {max_bytes} bytes)")
    if data.startswith(_BOM):
        data = data[len(_BOM) :]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line_start = data.rfind(b"\n", 0, exc.start) + 1
        line = data.count(b"\n", 0, exc.start) + 1
        col = len(data[line_start : exc.start].decode("utf-8", errors="replace")) + 1
        _fail(
            display,
            f"file is not valid UTF-8 (byte 0x{data[exc.start]:02x})",
            "save the file with UTF-8 encoding",
            line,
            col,
        )
    if not text.strip():
        _fail(display, "file is empty", "it needs at least 'project' and 'services'")
    return Source(display, absolute, text)
