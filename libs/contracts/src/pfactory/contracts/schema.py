"""JSON Schema (Draft 2020-12) for each config kind, for editors and API documentation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pfactory.contracts.configs.common import API_VERSION, ConfigBase
from pfactory.contracts.configs.kinds import CONFIG_KINDS

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_BASE_URI = "https://pfactory.io/schemas/v1/"
SCHEMA_FILES = {"FeatureSet": "featureset.schema.json", "Model": "model.schema.json"}
"""Schema file name by config kind."""


def config_schema(kind: str) -> dict[str, Any]:
    """Return the JSON Schema of one config kind.

    Args:
        kind: a registered kind, e.g. ``"Model"``.

    Returns:
        A Draft 2020-12 schema with ``$schema``, ``$id``, ``title`` and ``description``.

    Raises:
        KeyError: ``kind`` is not a registered config kind.
    """
    cls: type[ConfigBase] = CONFIG_KINDS[kind]
    body = cls.model_json_schema(by_alias=True, mode="validation")
    header = {
        "$schema": JSON_SCHEMA_DIALECT,
        "$id": SCHEMA_BASE_URI + SCHEMA_FILES[kind],
        "title": f"Prediction Factory {kind} ({API_VERSION})",
        "description": (cls.__doc__ or kind).strip(),
    }
    return {**header, **{k: v for k, v in body.items() if k not in header}}


def config_schemas() -> dict[str, dict[str, Any]]:
    """Return every config kind's schema, keyed by file name (``model.schema.json``, ...)."""
    return {SCHEMA_FILES[kind]: config_schema(kind) for kind in CONFIG_KINDS}


def export_schemas(out_dir: str | Path) -> list[Path]:
    """Write one ``<kind>.schema.json`` per config kind into ``out_dir`` (created if needed).

    Args:
        out_dir: destination folder.

    Returns:
        The written files.
    """
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in config_schemas().items():
        path = folder / name
        path.write_text(json.dumps(schema, indent=2, sort_keys=False) + "\n", encoding="utf-8")
        written.append(path)
    return written
