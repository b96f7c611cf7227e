"""Every shopctl command line that shopctl shows a user is one that parses (issue 12, item 10).

Hints, notices, help texts and generated comments name commands (`shopctl up --runtime
local`, `shopctl saga retry ID`). They are collected from the source rather than from a
list, so a new hint is checked the day it is written:

- every string literal of shopctl/ (docstrings excepted: they talk to developers), with
  f-string fields and `+` joins put together and their values shown as `{}`;
- the notes each shipped scaffold kind prints (templates/KIND/manifest.yaml), and the
  next steps `shopctl init` prints (with --demo, taken from the demo's shop.yaml), each
  a whole command line.

In those texts a command is either a backticked `shopctl ...` span, or an unbackticked
`shopctl WORD ...` where WORD is a command (up to the next `)`, `,`, `;` or line end). An
unbackticked `shopctl WORD` where WORD is no command must be prose ("shopctl builds"):
the word is in PROSE, or the test fails, since that is how `shopctl build` and
`shopctl new` went unnoticed.

Each command line then goes through click's own parser (the one typer carries),
subcommand by subcommand: `make_context` converts and checks every option and argument
without running the command, so the commands exist and each option is accepted where
it is placed.
Placeholders become a sample value: `{}` and `{name}` fields, upper-case words (NAME,
ID, KEY=VALUE); `...` is dropped; `a|b|c` is tried with each alternative.
"""

from __future__ import annotations

import ast
import functools
import itertools
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer.main

from shopctl import bundle
from shopctl.cli.app import app

try:  # typer vendors its own click (typer._click) since 0.2x; older ones use click's
    from typer._click.exceptions import UsageError
except ImportError:  # pragma: no cover
    from click.exceptions import UsageError

PACKAGE = Path(__file__).resolve().parents[2] / "shopctl"
SAMPLE = "sample"

# Words that follow an unbackticked "shopctl " in prose ("the images shopctl builds").
PROSE = frozenset({"builds", "built", "ships", "installation", "for", "left", "could", "runs"})

_BACKTICKED = re.compile(r"`([^`\n]*)`")
_UNBACKTICKED = re.compile(r"(?<![\w./-])shopctl[ \t]+(?=(-{0,2}[a-z][\w-]*))")
_END = re.compile(r"[),;`\n]")
_PLACEHOLDER = re.compile(r"\{[\w.]*\}|(?<![\w-])[A-Z][A-Z_]*[A-Z](?![\w-])")


@dataclass(frozen=True)
class Hint:
    where: str  # file:line, for the failure message
    command: str  # the command line as written, "shopctl" first

    def __str__(self) -> str:
        return f"{self.where}: `{self.command}`"


# -- collecting ---------------------------------------------------------------------------


def _docstrings(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if (body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                    and isinstance(body[0].value.value, str)):
                found.add(id(body[0].value))
    return found


def _text(node: ast.AST) -> str | None:
    """The string an expression builds, `{}` for what is computed; None if no string."""
    if isinstance(node, ast.Constant):
        return node.value if isinstance(node.value, str) else None
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _text(node.left), _text(node.right)
        if left is None and right is None:
            return None
        return (left if left is not None else "{}") + (right if right is not None else "{}")
    return None


def _strings(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, text) of every outermost string expression that is not a docstring."""
    docs = _docstrings(tree)
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST) -> None:
        if id(node) in docs:
            return
        text = _text(node)
        if text is not None:
            found.append((node.lineno, text))
            if isinstance(node, ast.BinOp):  # `"..." + f(x)`: look into f(x), not the parts
                for part in (node.left, node.right):
                    if _text(part) is None:
                        visit(part)
            return
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def commands_in(text: str) -> tuple[list[str], list[str]]:
    """(command lines, unbackticked `shopctl WORD` of words that are no command)."""
    commands = [span.strip() for span in _BACKTICKED.findall(text)
                if re.match(r"(sudo\s+)?shopctl(\s|$)", span.strip())]
    prose_only = _BACKTICKED.sub(lambda m: " " * len(m.group(0)), text)
    unknown = []
    names = _command_names()
    for match in _UNBACKTICKED.finditer(prose_only):
        word = match.group(1)
        if word in names or word.startswith("-"):
            rest = prose_only[match.start():]
            end = _END.search(rest)
            commands.append((rest[:end.start()] if end else rest).strip().rstrip("."))
        elif word not in PROSE:
            unknown.append(f"shopctl {word}")
    return commands, unknown


def _python_texts() -> list[tuple[str, str]]:
    texts = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        where = path.relative_to(PACKAGE.parent)
        texts += [(f"{where}:{line}", text) for line, text in _strings(tree)]
    return texts


def _manifest_texts() -> list[tuple[str, str]]:
    """The shipped scaffold kinds' manifests, whose notes are printed after a scaffold."""
    return [(str(manifest.relative_to(bundle.templates().parent)), manifest.read_text())
            for manifest in sorted(bundle.templates().glob("*/manifest.yaml"))]


def _init_steps() -> list[Hint]:
    """The next steps `shopctl init` prints: each one a whole command line."""
    from shopctl import project_init

    hints = []
    for demo in (False, True):
        files = project_init.plan_init(Path.cwd(), "demo", demo=demo)
        where = f"shopctl init{' --demo' * demo}, next steps"
        hints += [Hint(where, step) for step in project_init.next_steps(Path.cwd(), files, demo)]
    return hints


def collect() -> tuple[list[Hint], list[str]]:
    hints, unknown = _init_steps(), []
    for where, text in _python_texts() + _manifest_texts():
        commands, strangers = commands_in(text)
        hints += [Hint(where, command) for command in commands]
        unknown += [f"{where}: {stranger}" for stranger in strangers]
    return hints, unknown


# -- parsing ------------------------------------------------------------------------------


@functools.cache
def _command_names() -> frozenset[str]:
    return frozenset(_root().commands)


def _is_group(command) -> bool:
    return hasattr(command, "resolve_command")


def _root():
    command = typer.main.get_command(app)
    assert _is_group(command)
    return command


def argv_variants(command: str) -> list[list[str]]:
    """The argument lists a written command line stands for (after `shopctl`)."""
    line = re.sub(r"^sudo\s+", "", command.strip())
    tokens = shlex.split(line)  # an unbalanced quote fails here: not a command line either
    assert tokens[0] == "shopctl", command
    tokens = [_PLACEHOLDER.sub(SAMPLE, token) for token in tokens[1:] if token != "..."]
    choices = [token.split("|") if "|" in token else [token] for token in tokens]
    return [list(argv) for argv in itertools.product(*choices)]


def parse(argv: list[str]) -> None:
    """Parse `shopctl ARGV` as click would, down to the last subcommand, running nothing.
    Raises UsageError (no such command or option, a missing or extra argument...)."""
    command = _root()
    ctx = command.make_context("shopctl", list(argv))
    while _is_group(command):
        rest = [*getattr(ctx, "_protected_args", []), *ctx.args]
        if not rest:
            return  # names a group (`shopctl saga`): it exists, and lists its commands
        name, sub, rest = command.resolve_command(ctx, rest)
        assert sub is not None and name is not None
        if _is_group(sub) and not rest:
            return
        command, ctx = sub, sub.make_context(name, rest, parent=ctx)


# -- the tests ----------------------------------------------------------------------------

HINTS, UNKNOWN = collect()


def test_hints_are_found():
    """The collector sees the hints it must check (a broken collector checks nothing)."""
    written = {hint.command for hint in HINTS}
    assert len(HINTS) >= 20, HINTS
    for expected in ("shopctl up", "shopctl saga list", "shopctl status"):
        assert expected in written, sorted(written)
    assert any(hint.where.startswith("shopctl/docker_client.py") for hint in HINTS)
    assert any("manifest.yaml" in hint.where for hint in HINTS)
    assert any("init --demo" in hint.where for hint in HINTS)


@pytest.mark.parametrize("hint", HINTS, ids=str)
def test_every_hint_is_a_command_line_that_parses(hint):
    for argv in argv_variants(hint.command):
        try:
            parse(argv)
        except UsageError as exc:
            pytest.fail(f"{hint} does not parse as `shopctl {' '.join(argv)}`: "
                        f"{exc.format_message()}")


def test_no_hint_names_a_command_that_does_not_exist():
    assert not UNKNOWN, (
        "unbackticked `shopctl WORD` where WORD is no command (a command that does not "
        "exist, or prose: then add the word to PROSE): " + "; ".join(UNKNOWN))


@pytest.mark.parametrize("written", [
    "shopctl --runtime local ...",  # the option belongs after the command
    "shopctl build",
    "shopctl new shipping",
    "shopctl saga retry",  # a missing argument
    "shopctl up --no-such-flag",
    "shopctl scaffold new-service NAME --kind",
])
def test_the_parser_refuses_what_a_user_could_not_run(written):
    """The check above can fail: these are the wrong hints the issue found, and others."""
    with pytest.raises(UsageError):
        for argv in argv_variants(written):
            parse(argv)


def test_the_collector_finds_unbackticked_commands_and_unknown_words():
    commands, unknown = commands_in("run this once as root (sudo shopctl build), or "
                                    "create it (shopctl new {}) or `shopctl up` it; "
                                    "the images shopctl builds")
    assert commands == ["shopctl up"]
    assert unknown == ["shopctl build", "shopctl new"]
    commands, unknown = commands_in("shopctl scaffold new-service shipping --kind fastapi")
    assert commands == ["shopctl scaffold new-service shipping --kind fastapi"] and not unknown
