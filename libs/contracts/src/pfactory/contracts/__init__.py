"""Config kinds, event envelope, events and topic names: pydantic models, no I/O.

Config-side public API (events and topics live in ``pfactory.contracts.events`` / ``.topics``)::

    from pfactory.contracts import load_config, ModelConfig, FeatureSetConfig, ConfigError
"""

from pfactory.contracts.configs import (
    ANY_CONFIG_ADAPTER,
    API_VERSION,
    CONFIG_KINDS,
    AnyConfig,
    ConfigBase,
    FeatureSetConfig,
    ModelConfig,
    config_class,
)
from pfactory.contracts.imports import (
    DisallowedImportError,
    ImportAllowlist,
    ImportSettings,
    check_import_path,
    default_allowlist,
    require_allowed_import,
)
from pfactory.contracts.issues import ConfigError, ConfigIssue
from pfactory.contracts.loader import load_config, load_config_dict
from pfactory.contracts.schema import config_schema, config_schemas, export_schemas

__all__ = [
    "ANY_CONFIG_ADAPTER",
    "API_VERSION",
    "CONFIG_KINDS",
    "AnyConfig",
    "ConfigBase",
    "ConfigError",
    "ConfigIssue",
    "DisallowedImportError",
    "FeatureSetConfig",
    "ImportAllowlist",
    "ImportSettings",
    "ModelConfig",
    "check_import_path",
    "config_class",
    "config_schema",
    "config_schemas",
    "default_allowlist",
    "export_schemas",
    "load_config",
    "load_config_dict",
    "require_allowed_import",
]
