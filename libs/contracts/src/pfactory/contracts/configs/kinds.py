"""The registry of config kinds and the discriminated union over them."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Annotated

from pydantic import Field, TypeAdapter

from pfactory.contracts.configs.common import ConfigBase
from pfactory.contracts.configs.featureset import FeatureSetConfig
from pfactory.contracts.configs.model import ModelConfig

AnyConfig = Annotated[FeatureSetConfig | ModelConfig, Field(discriminator="kind")]
"""Any config, told apart by its ``kind``."""

CONFIG_KINDS: Mapping[str, type[ConfigBase]] = MappingProxyType(
    {"FeatureSet": FeatureSetConfig, "Model": ModelConfig}
)
"""Config class by ``kind``."""

ANY_CONFIG_ADAPTER: TypeAdapter[FeatureSetConfig | ModelConfig] = TypeAdapter(AnyConfig)
"""Validates a parsed config of any kind (no line numbers; prefer the loader for files)."""


def config_class(kind: str) -> type[ConfigBase] | None:
    """Return the config class registered for ``kind``, or None if there is none."""
    return CONFIG_KINDS.get(kind)
