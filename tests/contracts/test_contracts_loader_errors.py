"""Broken configs: every problem is reported at its file, line and column, as advice."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pfactory.contracts import ConfigError, ModelConfig, load_config, load_config_dict
from tests.contracts.support import EXAMPLES, MINIMAL_FEATURESET, MINIMAL_MODEL, issues_of, only_issue


def test_three_mistakes_are_all_reported_with_their_lines() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(EXAMPLES / "broken" / "three_mistakes_model.yaml")
    issues = caught.value.issues
    assert [(i.line, i.column, i.path) for i in issues] == [
        (12, 5, "spec.labels.pth"),
        (17, 9, "spec.task"),
        (27, 9, "spec.pipeline.estimator.params.max_dept"),
    ]
    assert [i.suggestion for i in issues] == ["path", "binary_classification", "max_depth"]
    rendered = str(caught.value).splitlines()
    assert rendered[0] == "3 problems in config:"
    assert rendered[3].endswith(
        "three_mistakes_model.yaml:27:9: spec.pipeline.estimator.params.max_dept: "
        "unknown field 'max_dept' — did you mean 'max_depth'?"
    )


def test_unknown_field_suggests_the_nested_models_own_field() -> None:
    text = MINIMAL_FEATURESET.replace("type: not_null", "type: between\n          mn: 3")
    issue = only_issue(text)
    assert (issue.line, issue.column, issue.path) == (22, 11, "spec.features[0].expectations[0].mn")
    assert issue.message == "unknown field 'mn'"
    assert issue.suggestion == "min"
    assert issue.code == "unknown_field"


def test_unknown_field_without_a_close_match_lists_the_fields() -> None:
    issue = only_issue(MINIMAL_MODEL.replace("  owner: team@example.org", "  owner: x\n  zzz: 1"))
    assert (issue.line, issue.column, issue.path) == (6, 3, "metadata.zzz")
    assert issue.suggestion is None
    assert issue.expected == "one of: name, owner, description, tags"


def test_unknown_field_inside_a_column_transformer_entry() -> None:
    steps = (
        "  pipeline:\n    steps:\n      - name: prep\n        transformers:\n"
        "          - name: num\n            import: sklearn.preprocessing.StandardScaler\n"
        "            colums: [age]\n"
    )
    issues = issues_of(MINIMAL_MODEL.replace("  pipeline:\n", steps))
    assert [(i.line, i.path, i.suggestion) for i in issues] == [
        (22, "spec.pipeline.steps[0].transformers[0].colums", "columns")
    ]


def test_missing_required_field_points_at_the_parent_key() -> None:
    issue = only_issue(MINIMAL_MODEL.replace("    entity: id\n", ""))
    assert (issue.line, issue.column, issue.path) == (8, 3, "spec.labels.entity")
    assert issue.message == "missing required field 'entity'"
    assert issue.expected and "entity key column" in issue.expected


def test_wrong_type_says_what_was_expected() -> None:
    text = MINIMAL_MODEL.replace("2024-06-30}", "2024-06-30}\n    split: {test_fraction: abc}")
    issue = only_issue(text)
    assert (issue.line, issue.column, issue.path) == (16, 28, "spec.training.split.test_fraction")
    assert issue.message == "wrong type: got the string 'abc'"
    assert issue.expected == "a number"


def test_union_type_errors_fold_into_one_issue() -> None:
    issue = only_issue(MINIMAL_MODEL.replace("label_column: y", "label_column: y\n    positive_class: [1]"))
    assert issue.path == "spec.labels.positive_class"
    assert issue.expected == "a string or an integer or true or false"


def test_invalid_enum_value_suggests_the_closest() -> None:
    issue = only_issue(MINIMAL_FEATURESET.replace("dtype: int", "dtype: integr"))
    assert (issue.line, issue.column, issue.path) == (19, 14, "spec.features[0].dtype")
    assert issue.suggestion == "int"
    assert issue.expected is not None and "'timestamp'" in issue.expected


def test_invalid_enum_dict_key_points_at_the_key() -> None:
    issue = only_issue(
        MINIMAL_MODEL.replace("primary: roc_auc", "primary: roc_auc\n    thresholds: {roc_aucc: 0.7}")
    )
    assert (issue.line, issue.column, issue.path) == (22, 18, "spec.metrics.thresholds.roc_aucc")
    assert issue.suggestion == "roc_auc"


def test_unknown_expectation_type_suggests_a_known_one() -> None:
    issue = only_issue(MINIMAL_FEATURESET.replace("type: not_null", "type: not_nul"))
    assert (issue.line, issue.column, issue.path) == (21, 17, "spec.features[0].expectations[0].type")
    assert issue.message == "unknown type 'not_nul'"
    assert issue.suggestion == "not_null"


def test_unknown_kind_suggests_a_registered_kind() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(EXAMPLES / "broken" / "unknown_kind.yaml")
    (issue,) = caught.value.issues
    assert (issue.line, issue.column, issue.path, issue.code) == (2, 7, "kind", "unknown_kind")
    assert issue.suggestion == "FeatureSet"


def test_missing_kind_and_wrong_api_version() -> None:
    issue = only_issue("apiVersion: pfactory.io/v1\nmetadata: {name: x, owner: y}\n")
    assert (issue.path, issue.message) == ("kind", "missing required field 'kind'")
    issue = only_issue(MINIMAL_MODEL.replace("pfactory.io/v1", "v1"))
    assert (issue.line, issue.column, issue.path, issue.expected) == (1, 13, "apiVersion", "'pfactory.io/v1'")


def test_expect_refuses_another_kind() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(MINIMAL_FEATURESET, expect=ModelConfig)
    assert caught.value.issues[0].code == "wrong_kind"


def test_malformed_yaml_reports_the_parser_position() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(EXAMPLES / "broken" / "malformed.yaml")
    (issue,) = caught.value.issues
    assert (issue.line, issue.column, issue.code) == (8, 12, "yaml_syntax")
    assert "line 7" in issue.message


def test_duplicate_keys_are_errors_not_last_wins() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(EXAMPLES / "broken" / "duplicate_keys.yaml")
    (issue,) = caught.value.issues
    assert (issue.line, issue.column, issue.path, issue.code) == (
        20,
        7,
        "spec.features[0].dtype",
        "duplicate_key",
    )
    assert "first defined on line 19" in issue.message


def test_yaml_merge_keys_may_override_without_a_duplicate_error() -> None:
    text = MINIMAL_MODEL.replace("  card:\n", "  card: &card\n").replace(
        "    contact: team@example.org\n", "    contact: team@example.org\nx-extra: {<<: *card, contact: b}\n"
    )
    issues = issues_of(text)
    assert [i.code for i in issues] == ["unknown_field"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- a\n- b\n", "a config must be a mapping with apiVersion, kind, metadata and spec, not a list"),
        ("", "the document is empty"),
        ("kind: !!python/name:os.system x\n", "could not determine a constructor"),
    ],
)
def test_unusable_documents(text: str, message: str) -> None:
    issue = only_issue(text)
    assert message in issue.message
    assert issue.line == 1


def test_boolean_looking_keys_must_be_quoted() -> None:
    issue = only_issue(MINIMAL_MODEL.replace("    date_column: ds\n", "    date_column: ds\n    yes: 1\n"))
    assert (issue.line, issue.code) == (12, "invalid_key")


def test_json_text_gets_lines_too() -> None:
    text = (
        '{"apiVersion": "pfactory.io/v1", "kind": "Model",\n'
        ' "metadata": {"name": "x", "owner": "y", "colour": 1}}'
    )
    issues = issues_of(text)
    assert [(i.line, i.column, i.path, i.code) for i in issues] == [
        (1, 1, "spec", "missing"),
        (2, 42, "metadata.colour", "unknown_field"),
    ]


def test_parsed_json_bodies_get_paths_without_lines() -> None:
    body = json.loads(
        json.dumps({"apiVersion": "pfactory.io/v1", "kind": "Model", "metadata": {"name": "x"}})
    )
    with pytest.raises(ConfigError) as caught:
        load_config_dict(body)
    paths = {(i.path, i.line, i.column) for i in caught.value.issues}
    assert paths == {("metadata.owner", None, None), ("spec", None, None)}
    assert str(caught.value.issues[0]).startswith("<config>: ")


def test_issue_renders_as_a_json_able_dict() -> None:
    issue = only_issue(MINIMAL_FEATURESET.replace("dtype: int", "dtype: integr"))
    assert json.loads(json.dumps(issue.as_dict())) == {
        "file": "cfg.yaml",
        "line": 19,
        "column": 14,
        "path": "spec.features[0].dtype",
        "message": "invalid value 'integr'",
        "expected": "one of 'int', 'long', 'float', 'double', 'string', 'boolean', 'date', 'timestamp'",
        "suggestion": "int",
        "code": "invalid_choice",
    }


def test_unreadable_file_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(Path("does/not/exist.yaml"))
    (issue,) = caught.value.issues
    assert (issue.file, issue.code) == ("does/not/exist.yaml", "unreadable")


@pytest.mark.parametrize(
    ("old", "new", "path", "fragment", "suggestion"),
    [
        ("name: tiny\n", "name: Tiny Model\n", "metadata.name", "not a valid name", "tiny-model"),
        (
            "  version: 1\n",
            "  version: 1\n  schedule: {cron: '0 6 * *'}\n",
            "spec.schedule.cron",
            "has 4 fields",
            None,
        ),
        (
            "  version: 1\n",
            "  version: 1\n  schedule: {cron: '0 25 * * *'}\n",
            "spec.schedule.cron",
            "out of range 0-23",
            None,
        ),
        (
            "  version: 1\n",
            "  version: 1\n  schedule: {cron: '@daily', timezone: Europe/Londn}\n",
            "spec.schedule.timezone",
            "unknown timezone",
            "Europe/London",
        ),
        ("  version: 1\n", "  version: v1\n", "spec.version", "invalid version", None),
        ('path: "data/raw', 'path: "ftp://x/data/raw', "spec.sources.raw.path", "unsupported scheme", None),
        ("    - name: age\n", "    - name: 2age\n", "spec.features[0].name", "not a valid column", "2age"),
    ],
)
def test_checked_strings_explain_themselves(
    old: str, new: str, path: str, fragment: str, suggestion: str | None
) -> None:
    base = MINIMAL_MODEL if old.startswith("name: tiny") else MINIMAL_FEATURESET
    issue = only_issue(base.replace(old, new, 1))
    assert issue.path == path
    assert fragment in issue.message
    assert issue.suggestion == suggestion


def test_a_string_is_always_config_text_never_a_path_to_read(tmp_path: Path) -> None:
    secret = tmp_path / "secret.yaml"
    secret.write_text("apiVersion: pfactory.io/v1\nkind: Model\n")
    with pytest.raises(ConfigError) as caught:
        load_config(str(secret))
    # parsed as the YAML scalar it is, so the error is about the document's shape, not the file's content
    assert "Model" not in str(caught.value)
    assert caught.value.issues[0].line == 1
