"""The pipeline: read -> YAML with positions -> interpolate -> schema -> cross-checks."""

from __future__ import annotations

import os
from collections.abc import Mapping

from pydantic import ValidationError

from shopctl.config.errors import validation_problems
from shopctl.config.interpolate import interpolate_tree
from shopctl.config.model import ShopConfig
from shopctl.config.problems import ConfigInvalid, ConfigProblem, format_path, problem_at
from shopctl.config.references import check_references
from shopctl.config.source import read_source
from shopctl.config.yamlpos import load_yaml


def load_config(
    path: str | os.PathLike[str], environ: Mapping[str, str] | None = None
) -> ShopConfig:
    """Load and check shop.yaml; raise ConfigInvalid (a ConfigError) listing every problem."""
    source = read_source(path)
    file = source.display
    document = load_yaml(source.text, file)
    problems = list(document.problems)

    env = os.environ if environ is None else environ
    data, issues = interpolate_tree(document.data, env)
    for where, issue in issues:
        problems.append(problem_at(file, document.positions, where, issue.message, issue.hint))
    # A value whose interpolation failed is reported once, not again by the later checks.
    broken = {format_path(where) for where, _ in issues}

    def fresh(found: list[ConfigProblem]) -> list[ConfigProblem]:
        return [p for p in found if not any(_within(p.path, b) for b in broken)]

    config = None
    try:
        config = ShopConfig.model_validate(data)
    except ValidationError as exc:
        problems += fresh(validation_problems(exc, file, document.positions, ShopConfig))
    problems += fresh(check_references(data, file, document.positions, source.root))

    if problems or config is None:
        raise ConfigInvalid(file, problems)
    return config.attach(source.path)


def _within(path: str, ancestor: str) -> bool:
    return path == ancestor or path.startswith((ancestor + ".", ancestor + "["))
