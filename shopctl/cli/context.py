"""What the root options give every command: which shop.yaml, how chatty.

The config is loaded and validated once, on first use, and the same frozen model is
passed everywhere after that.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from shopctl.config import ShopConfig

DEFAULT_FILE = "shop.yaml"


@dataclass
class AppContext:
    file: Path
    verbose: bool = False
    _config: ShopConfig | None = field(default=None, repr=False)

    @property
    def config(self) -> ShopConfig:
        if self._config is None:
            from shopctl.config import load_config

            self._config = load_config(self.file)
        return self._config


def resolve_file(option: str | None) -> Path:
    return Path(option or os.environ.get("SHOPCTL_FILE") or DEFAULT_FILE)


def app_context(ctx: typer.Context) -> AppContext:
    root = ctx.find_root()
    if not isinstance(root.obj, AppContext):
        root.obj = AppContext(file=resolve_file(None))
    return root.obj
