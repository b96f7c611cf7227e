"""`shopctl init`: the files of a new project, as File objects (nothing is written here).

An empty project is a commented shop.yaml with the infra defaults and no services yet,
a .gitignore for shopctl's state, and empty services/ and protos/ folders. With `demo`
it is the demo shop shopctl ships (shopctl.bundle): the same files as this repository's
shop.yaml, services/ and protos/, with the project name set.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

from shopctl.config.model import PROJECT_NAME
from shopctl.errors import UsageError
from shopctl.scaffold.render import File

GITIGNORE = """\
# shopctl's per-project state: secrets, the saga log, local processes' logs and data
.shopctl/
# what services and their builds leave behind
__pycache__/
*.pyc
.pytest_cache/
data/
generated/
"""

SHOP_YAML = """\
# The shop shopctl builds, runs and registers: `shopctl config validate` checks this
# file, `shopctl config show` prints it with every default filled in.
project: {name}

infra:
  # Images are built locally from Debian packages when missing (no registry needed);
  # with a registry, point these at official images (python, hashicorp/consul, rabbitmq).
  base_image: shopctl/python:3.11
  consul: {{enabled: true, image: shopctl/consul:1.8, port: 8500}}
  rabbitmq: {{enabled: true, image: shopctl/rabbitmq:3.10, port: 5672}}
  prometheus: {{enabled: false, image: shopctl/prometheus:2.42, port: 9090}}

services:
  # `shopctl scaffold new-service NAME --kind flask|fastapi|nameko|grpc` adds one here.

# Sagas across the services: see the README's "Sagas". For example:
#   delivery:
#     steps:
#       - {{name: hold_shipping, call: shipping.hold, compensate: shipping.release}}
sagas:
"""


def project_name(root: Path, name: str | None) -> str:
    """`name`, or one made from the folder's name; UsageError when it is not valid."""
    if name is None:
        candidate = re.sub(r"[^a-z0-9]+", "-", root.resolve().name.lower()).strip("-")[:40]
        if PROJECT_NAME.fullmatch(candidate):
            return candidate
        raise UsageError(f"cannot make a project name from the folder name {root.name!r}",
                         hint="give one with --name, e.g. --name myshop")
    if not PROJECT_NAME.fullmatch(name):
        raise UsageError(f"bad project name {name!r}: expected lowercase letters, digits and "
                         "hyphens, at most 40, not starting or ending with a hyphen",
                         hint="e.g. --name myshop")
    return name


def plan_init(root: Path, name: str, demo: bool) -> list[File]:
    """The files of the new project (paths relative to `root`)."""
    files = [File(PurePosixPath(".gitignore"), GITIGNORE)]
    if not demo:
        return [*files, File(PurePosixPath("shop.yaml"), SHOP_YAML.format(name=name)),
                File(PurePosixPath("services/.gitkeep"), ""),
                File(PurePosixPath("protos/.gitkeep"), "")]
    from shopctl.bundle import demo_files

    for relative, source in demo_files():
        text = source.read_text(encoding="utf-8")
        if relative == "shop.yaml":
            text = re.sub(r"(?m)^project:[^\n#]*", f"project: {name}", text, count=1)
        files.append(File(PurePosixPath(relative), text,
                          executable=bool(source.stat().st_mode & 0o111)))
    return files


def refuse_existing(root: Path, force: bool) -> None:
    """UsageError (exit 2) when `root` already holds a project and `force` is not set."""
    if (root / "shop.yaml").exists() and not force:
        raise UsageError(f"{root.resolve() / 'shop.yaml'} already exists: the folder holds "
                         f"a project",
                         hint="use another folder, or --force to write over its files")
    if root.exists() and not root.is_dir():
        raise UsageError(f"{root} is a file, not a folder")


def next_steps(root: Path, files: list[File], demo: bool) -> list[str]:
    """What to run next. The demo's shop.yaml suggests commands of its own in comments
    (`# shopctl saga run ...`): those come after `shopctl up`."""
    where = [] if root.resolve() == Path.cwd().resolve() else [f"cd {root}"]
    if not demo:
        return [*where, "shopctl scaffold new-service shipping --kind fastapi", "shopctl up",
                "shopctl status"]
    shop_yaml = next(f.content for f in files if str(f.path) == "shop.yaml")
    suggested = re.findall(r"(?m)^\s*#\s*(shopctl [^\n]+?)\s*$", shop_yaml)
    return [*where, "shopctl up", *suggested]
