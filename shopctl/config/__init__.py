"""shop.yaml: loading, checking and the frozen model the rest of shopctl reads.

    config = load_config("shop.yaml")     # raises ConfigInvalid (a ConfigError) with .problems

The pipeline, one module per stage: source (read the file), yamlpos (YAML with positions),
interpolate (${VAR}), model (pydantic schema), errors (schema errors as problems),
references (cross-checks). loader ties them together.
"""

from shopctl.config.durations import format_duration, parse_duration
from shopctl.config.interpolate import InterpolationError, interpolate
from shopctl.config.loader import load_config
from shopctl.config.model import (
    ConsulConfig,
    HealthConfig,
    InfraConfig,
    PrometheusConfig,
    RabbitMQConfig,
    SagaConfig,
    SagaStep,
    ServiceConfig,
    ShopConfig,
)
from shopctl.config.problems import ConfigInvalid, ConfigProblem
from shopctl.config.source import CONFIG_NAME, find_config

__all__ = [
    "CONFIG_NAME",
    "ConfigInvalid",
    "ConfigProblem",
    "ConsulConfig",
    "HealthConfig",
    "InfraConfig",
    "InterpolationError",
    "PrometheusConfig",
    "RabbitMQConfig",
    "SagaConfig",
    "SagaStep",
    "ServiceConfig",
    "ShopConfig",
    "find_config",
    "format_duration",
    "interpolate",
    "load_config",
    "parse_duration",
]
