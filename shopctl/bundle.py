"""What shopctl ships beside its code: scaffolding templates, the service kit (shopkit)
and the demo shop, and where a project overrides them.

A wheel carries them under shopctl/_bundle/ (setup.py copies them from the checkout's
top-level folders at build time); an editable install or a checkout reads those folders
directly. Either way there is one source: this repository's templates/, services/ and
protos/.

A project may override: its own `templates/KIND/` overrides or adds a kind, and its own
`services/shopkit/` (a folder holding the `shopkit` package) replaces the shipped kit.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from shopctl.errors import RuntimeUnavailable

_PACKAGE = Path(__file__).resolve().parent
_CHECKOUT = _PACKAGE.parent
KIT_PACKAGE = "shopkit"
DEMO_SKIP = frozenset({"__pycache__", ".pytest_cache", "data", "generated", ".shopctl"})


def _shipped(name: str, checkout_path: Path) -> Path:
    bundled = _PACKAGE / "_bundle" / name
    if bundled.exists():
        return bundled
    if checkout_path.exists():
        return checkout_path
    raise RuntimeUnavailable(f"this shopctl installation lacks its {name} "
                             f"(looked in {bundled} and {checkout_path})",
                             hint="reinstall shopctl (pip install --force-reinstall shopctl)")


def templates() -> Path:
    """The templates folder shopctl ships (one folder a kind, plus _shared)."""
    return _shipped("templates", _CHECKOUT / "templates")


def shipped_kit() -> Path:
    """The shipped service kit's distribution folder (pyproject.toml and shopkit/)."""
    return _shipped("shopkit", _CHECKOUT / "services" / "shopkit")


@dataclass(frozen=True)
class Kit:
    root: Path  # the distribution folder: holds pyproject.toml and the shopkit package
    source: str  # "project" (its own services/shopkit) or "shopctl" (shipped)

    @property
    def package(self) -> Path:
        return self.root / KIT_PACKAGE

    def _project(self) -> dict:
        """The [project] table of the kit's pyproject.toml ({} when there is none)."""
        import tomllib

        pyproject = self.root / "pyproject.toml"
        if not pyproject.is_file():
            return {}
        try:
            return tomllib.loads(pyproject.read_text()).get("project", {})
        except tomllib.TOMLDecodeError as exc:
            from shopctl.errors import OperationFailed

            raise OperationFailed(f"{pyproject} is not valid TOML: {exc}") from None

    @property
    def version(self) -> str:
        return str(self._project().get("version", "unknown"))

    @property
    def dependencies(self) -> list[str]:
        """What the kit needs installed beside it (its declared dependencies)."""
        return [str(dep) for dep in self._project().get("dependencies", [])]


def kit_for(project_root: Path) -> Kit:
    """The kit a project's services use: its own services/shopkit when it has one (its
    edits rebuild the images as any code change does), else the one shopctl ships."""
    own = Path(project_root) / "services" / KIT_PACKAGE
    if (own / KIT_PACKAGE).is_dir():
        return Kit(own, "project")
    return Kit(shipped_kit(), "shopctl")


def demo_files() -> list[tuple[str, Path]]:
    """(path relative to a new project, source file) of the demo shop: shop.yaml,
    protos/ and every service of services/ but the kit (that ships on its own)."""
    if (_PACKAGE / "_bundle" / "demo").exists():
        base = _PACKAGE / "_bundle" / "demo"
    else:
        base = _CHECKOUT
    files = [("shop.yaml", base / "shop.yaml")]
    for folder in ("protos", "services"):
        for path in sorted((base / folder).rglob("*")):
            relative = path.relative_to(base)
            if (not path.is_file() or DEMO_SKIP.intersection(relative.parts)
                    or relative.parts[:2] == ("services", KIT_PACKAGE)
                    or path.suffix == ".pyc" or any(p.endswith(".egg-info")
                                                    for p in relative.parts)):
                continue
            files.append((relative.as_posix(), path))
    return files
