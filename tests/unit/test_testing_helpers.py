"""The helpers the dev test and bench/dev_loop.py share (shopctl.testing) fit what the
templates scaffold: each kind's greeting handler is found and edited in one place, and a
user token passes the services' own check."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from shopkit.tokens import verify_access_token

from shopctl.scaffold.kinds import get_kind
from shopctl.scaffold.render import ServiceSpec, render_service
from shopctl.state import ProjectState
from shopctl.testing import GREETING_FILES, USER, mark_greeting, user_token

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"


def compiles(path: Path) -> bool:
    try:
        ast.parse(path.read_text())
    except SyntaxError:
        return False
    return True


@pytest.mark.parametrize("kind", ["fastapi", "flask", "grpc", "nameko"])
def test_each_kinds_greeting_handler_is_edited_in_one_place(tmp_path, kind):
    for file in render_service(ServiceSpec("till-roll", get_kind(TEMPLATES, kind), 8123, 9123)):
        (tmp_path / file.path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / file.path).write_text(file.content)
    service = tmp_path / "services" / "till-roll"
    original = (service / GREETING_FILES[kind]).read_text()

    mark_greeting(service, kind, 1)
    path = mark_greeting(service, kind, 2)

    text = path.read_text()
    assert "greeting} (mark 2), " in text and "(mark 1)" not in text and compiles(path)
    assert len(text.splitlines()) == len(original.splitlines())  # one line changed
    mark_greeting(service, kind, 3, broken=True)
    assert not compiles(path)
    mark_greeting(service, kind, 4)  # the next save fixes it
    assert compiles(path) and "(mark 4)" in path.read_text()


def test_a_file_without_one_greeting_handler_is_refused(tmp_path):
    (tmp_path / "app.py").write_text("print('no handler here')\n")
    with pytest.raises(ValueError, match="no one greeting handler"):
        mark_greeting(tmp_path, "flask", 1)


def test_the_user_token_passes_the_services_check(tmp_path):
    token = user_token(tmp_path)

    claims = verify_access_token(token, ProjectState(tmp_path).jwt_secret())

    assert (claims["sub"], claims["type"]) == (USER, "access")
