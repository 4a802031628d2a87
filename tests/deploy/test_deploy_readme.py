"""deploy/README.md against the code: setting names, topics, paths and the DynamoDB table.

The operator's guide names environment variables, topics, repository files and a ``create-table``
definition; each is checked here against what the code reads, declares or creates, so the guide
cannot drift from the code unnoticed. Every check is also shown to catch a wrong entry.
"""

from __future__ import annotations

import importlib
import json
import re
import typing
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel
from pydantic_settings import BaseSettings

from pfactory.contracts.topics import ALL_TOPICS, DAY_MS
from pfactory.registry.dynamodb_items import FEATURE_SET_INDEX, STATUS_INDEX, table_definition
from pfactory.registry.settings import DynamoDBVersionIndexSettings

REPO = Path(__file__).resolve().parents[2]
README = REPO / "deploy" / "README.md"
SOURCE_DIRS = [REPO / "gateway" / "src", REPO / "cli" / "src", *sorted((REPO / "libs").glob("*/src"))]
SOURCE_DIRS += sorted((REPO / "workers").glob("*/src"))

# Every module that declares a settings class read from the environment; a guard test below proves
# no env_prefix in the source tree is missing from what these modules define.
SETTINGS_MODULES = (
    "pfactory.gateway.settings",
    "pfactory.bus.settings",
    "pfactory.telemetry.settings",
    "pfactory.registry.settings",
    "pfactory.registry.wiring",
    "pfactory.contracts.imports",
    "pfactory.alerter.settings",
    "pfactory.materialiser.settings",
    "pfactory.materialiser.adapters.emr",
    "pfactory.registrar.settings",
    "pfactory.scheduler.settings",
    "pfactory.scorer.settings",
    "pfactory.trainer.settings",
    "pfactory.trainer.manifest",
    "pfactory.trainer.tracking",
)

# PF_ names that are not settings fields but are read by code the platform generates; each must
# appear in the named source file, so this list cannot hide a typo either.
NON_SETTINGS_NAMES = {
    "PF_API_KEY": REPO / "workers/scheduler/src/pfactory/scheduler/dags.py",  # generated DAGs' fallback key
}

ENV_NAME = re.compile(r"PF_[A-Z0-9_]+")
PATH_ROOTS = ("deploy/", "libs/", "workers/", "gateway/", "cli/", "tests/", "examples/", "bench/")
CODE_SPAN = re.compile(r"`([^`\n]+)`")
TOPIC_HEADER = "| Topic | Partitions | Retention (days) |"
INDEX_HEADER = "| Key | Partition key (HASH) | Sort key (RANGE) | Projection |"
TABLE_MARKER = "<!-- dynamodb-table-definition -->"


# ---- the checks (pure functions of the README text, so the negative tests can feed them bad text)


def _settings_classes() -> list[type[BaseSettings]]:
    for module in SETTINGS_MODULES:
        importlib.import_module(module)
    found: list[type[BaseSettings]] = []
    pending: list[type[BaseSettings]] = list(BaseSettings.__subclasses__())
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if cls.__module__.startswith("pfactory.") and cls.model_config.get("env_prefix"):
            found.append(cls)
    return found


def _model_types(annotation: object) -> Iterator[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
    for arg in typing.get_args(annotation):
        yield from _model_types(arg)


def _field_names(cls: type[BaseModel], prefix: str, delimiter: str | None) -> Iterator[str]:
    for name, field in cls.model_fields.items():
        env = prefix + name.upper()
        yield env
        if delimiter:
            for nested in _model_types(field.annotation):
                yield from _field_names(nested, env + delimiter, delimiter)


def settings_env_names() -> set[str]:
    """Every environment variable a settings class reads: env_prefix + FIELD (+ ``__`` + SUB nested)."""
    classes = _settings_classes()
    nested_only: set[type[BaseModel]] = set()
    for cls in classes:
        if cls.model_config.get("env_nested_delimiter"):
            for field in cls.model_fields.values():
                nested_only.update(_model_types(field.annotation))
    names: set[str] = set()
    for cls in classes:
        if cls in nested_only:  # read through its parent's PARENT_FIELD__SUB names, not its own prefix
            continue
        prefix = str(cls.model_config["env_prefix"]).upper()
        delimiter = cls.model_config.get("env_nested_delimiter")
        names.update(_field_names(cls, prefix, delimiter))
    return names


def unknown_env_names(text: str, known: set[str]) -> list[str]:
    """Names in ``text`` that no setting reads; a name ending in '_' (``PF_BUS_*``) must prefix one."""
    unknown = []
    for name in sorted(set(ENV_NAME.findall(text))):
        if name in NON_SETTINGS_NAMES:
            continue
        if name.endswith("_"):
            if not any(real.startswith(name) for real in known):
                unknown.append(name)
        elif name not in known:
            unknown.append(name)
    return unknown


def _table_rows(text: str, header: str) -> list[list[str]]:
    lines = text.splitlines()
    start = lines.index(next(line for line in lines if line.startswith(header)))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip().replace("`", "") for cell in line.strip().strip("|").split("|")])
    return rows


def topic_rows(text: str) -> list[tuple[str, int, float]]:
    """(name, partitions, retention days) of each row of the README's topic table."""
    return [(row[0], int(row[1]), float(row[2])) for row in _table_rows(text, TOPIC_HEADER)]


def contract_topics() -> list[tuple[str, int, float]]:
    return [(spec.name, spec.partitions, spec.retention_ms / DAY_MS) for spec in ALL_TOPICS]


def missing_paths(text: str) -> list[str]:
    """Repository paths named in code spans or relative links that do not exist."""
    candidates = {span.split()[0] for span in CODE_SPAN.findall(text)}
    candidates |= {"deploy/" + link for link in re.findall(r"\]\((?!https?://|#)([^)#\s]+)", text)}
    missing = []
    for path in sorted(candidates):
        if not path.startswith(PATH_ROOTS) or any(char in path for char in "<>*{}$"):
            continue
        if not (REPO / path).exists():
            missing.append(path)
    return missing


def readme_table_definition(text: str) -> dict[str, typing.Any]:
    """The JSON block that follows the table-definition marker."""
    after = text.split(TABLE_MARKER, 1)[1]
    block = re.search(r"```json\n(.*?)\n```", after, re.DOTALL)
    assert block is not None, f"no ```json block after {TABLE_MARKER}"
    loaded: dict[str, typing.Any] = json.loads(block.group(1))
    return loaded


def index_rows_from_code(definition: dict[str, typing.Any]) -> list[list[str]]:
    def keys(schema: list[dict[str, str]]) -> list[str]:
        by_type = {entry["KeyType"]: entry["AttributeName"] for entry in schema}
        return [by_type["HASH"], by_type["RANGE"]]

    rows = [["table", *keys(definition["KeySchema"]), ""]]
    for index in definition["GlobalSecondaryIndexes"]:
        rows.append(
            [f"GSI {index['IndexName']}", *keys(index["KeySchema"]), index["Projection"]["ProjectionType"]]
        )
    return rows


# ---- the README as it is


@pytest.fixture(scope="module")
def readme() -> str:
    return README.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def known_names() -> set[str]:
    return settings_env_names()


def test_every_pf_name_is_a_setting(readme: str, known_names: set[str]) -> None:
    assert unknown_env_names(readme, known_names) == []


def test_settings_walk_covers_every_env_prefix_in_the_source(known_names: set[str]) -> None:
    declared = {
        match
        for directory in SOURCE_DIRS
        for source in directory.rglob("*.py")
        for match in re.findall(r'env_prefix="(PF_[A-Z0-9_]+)"', source.read_text(encoding="utf-8"))
    }
    assert declared, "no env_prefix found: the source layout changed"
    uncovered = sorted(prefix for prefix in declared if not any(n.startswith(prefix) for n in known_names))
    # PF_REGISTRY_S3_ / PF_REGISTRY_DYNAMODB_ are reached as PF_REGISTRY_S3__… through their parent
    assert uncovered == [], f"settings modules not walked: add them to SETTINGS_MODULES ({uncovered})"


def test_non_settings_names_are_read_where_claimed() -> None:
    for name, source in NON_SETTINGS_NAMES.items():
        assert name in source.read_text(encoding="utf-8"), f"{name} is no longer read in {source}"


def test_topic_table_equals_the_contracts(readme: str) -> None:
    assert topic_rows(readme) == contract_topics()


def test_repository_paths_exist(readme: str) -> None:
    assert missing_paths(readme) == []


def test_table_definition_is_what_the_store_creates(readme: str) -> None:
    default_table = DynamoDBVersionIndexSettings.model_fields["table_name"].default
    assert readme_table_definition(readme) == table_definition(default_table)


def test_key_schema_table_matches_the_store(readme: str) -> None:
    rows = _table_rows(readme, INDEX_HEADER)
    assert rows == index_rows_from_code(table_definition("t"))
    assert {STATUS_INDEX, FEATURE_SET_INDEX} <= {row[0].removeprefix("GSI ") for row in rows}


def test_ttl_attribute_is_the_one_the_store_enables(readme: str) -> None:
    store = (REPO / "libs/registry/src/pfactory/registry/dynamodb.py").read_text(encoding="utf-8")
    attribute = re.search(r'"Enabled": True, "AttributeName": "(\w+)"', store)
    assert attribute is not None, "the store no longer enables TTL the way this test reads it"
    assert f"AttributeName={attribute.group(1)}" in readme


# ---- each check catches a wrong entry


def test_a_misspelt_setting_is_caught(readme: str, known_names: set[str]) -> None:
    broken = readme + "\nSet `PF_BUS_BOOTSTRAP_SERVER` and `PF_REGISTRY_S3_BUCKET` and `PF_NOPE_*`.\n"
    assert unknown_env_names(broken, known_names) == [
        "PF_BUS_BOOTSTRAP_SERVER",
        "PF_NOPE_",
        "PF_REGISTRY_S3_BUCKET",
    ]


def test_nested_names_use_the_delimiter(known_names: set[str]) -> None:
    assert "PF_REGISTRY_S3__BUCKET" in known_names
    assert "PF_REGISTRY_DYNAMODB__TABLE_NAME" in known_names
    assert "PF_REGISTRY_S3_BUCKET" not in known_names  # nested-only: its own prefix is never read


def test_a_wrong_topic_row_is_caught(readme: str) -> None:
    wrong_partitions = readme.replace("| `pf.train.requested` | 6 |", "| `pf.train.requested` | 3 |")
    assert wrong_partitions != readme
    assert topic_rows(wrong_partitions) != contract_topics()
    missing_row = readme.replace("| `pf.deadletter` | 1 | 30 |", "| `pf.deadletters` | 1 | 30 |")
    assert topic_rows(missing_row) != contract_topics()


def test_a_missing_path_is_caught(readme: str) -> None:
    assert missing_paths(readme + "\nSee `deploy/k8s/overlays/staging/kustomization.yaml`.\n") == [
        "deploy/k8s/overlays/staging/kustomization.yaml"
    ]
    assert missing_paths("[runbook](datadog/RUNBOOK.md)") == ["deploy/datadog/RUNBOOK.md"]


def test_a_wrong_index_is_caught(readme: str) -> None:
    renamed = readme.replace('"IndexName": "by_status"', '"IndexName": "status_index"')
    assert renamed != readme
    assert readme_table_definition(renamed) != table_definition("pf-registry")
    projection = readme.replace("| `gsi2sk` | ALL |", "| `gsi2sk` | KEYS_ONLY |")
    assert projection != readme
    assert _table_rows(projection, INDEX_HEADER) != index_rows_from_code(table_definition("t"))
