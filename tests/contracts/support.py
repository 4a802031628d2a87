"""Helpers for the contracts tests: minimal valid configs and an issue collector."""

from __future__ import annotations

from pathlib import Path

import pytest

from pfactory.contracts import ConfigError, ConfigIssue, ImportAllowlist, load_config

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

# Line numbers matter: tests replace text within a line and assert the reported line/column.
MINIMAL_MODEL = """\
apiVersion: pfactory.io/v1
kind: Model
metadata:
  name: tiny
  owner: team@example.org
spec:
  feature_set: {name: tiny-features, version: 1}
  labels:
    path: data/labels/
    entity: id
    date_column: ds
    label_column: y
  task: binary_classification
  training:
    window: {start: 2024-01-01, end: 2024-06-30}
  pipeline:
    estimator:
      import: sklearn.linear_model.LogisticRegression
      params: {C: 1.0}
  metrics:
    primary: roc_auc
  card:
    intended_use: tests
    contact: team@example.org
"""

MINIMAL_FEATURESET = """\
apiVersion: pfactory.io/v1
kind: FeatureSet
metadata:
  name: tiny-features
  owner: team@example.org
spec:
  entity: id
  timestamp: event_ts
  version: 1
  sources:
    raw:
      format: parquet
      path: "data/raw/ds={{ ds }}/"
  models:
    - name: base
      sql: "select * from {{ source('raw') }}"
  features:
    - name: age
      dtype: int
      expectations:
        - type: not_null
"""

DEFAULT_ALLOWLIST = ImportAllowlist()


def issues_of(
    text: str, *, filename: str = "cfg.yaml", allowlist: ImportAllowlist = DEFAULT_ALLOWLIST
) -> list[ConfigIssue]:
    """Load ``text`` expecting it to be refused; return the issues."""
    with pytest.raises(ConfigError) as caught:
        load_config(text, filename=filename, allowlist=allowlist)
    return caught.value.issues


def only_issue(text: str, **kwargs: object) -> ConfigIssue:
    """Load ``text`` expecting exactly one issue; return it."""
    issues = issues_of(text, **kwargs)  # type: ignore[arg-type]
    assert len(issues) == 1, "\n".join(str(i) for i in issues)
    return issues[0]
