"""The import allowlist refuses before importing, and never imports what it accepts."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pfactory.contracts import (
    ConfigError,
    DisallowedImportError,
    ImportAllowlist,
    ImportSettings,
    check_import_path,
    load_config,
    require_allowed_import,
)
from pfactory.contracts.imports import default_allowlist, suggest_import_path
from tests.contracts.support import EXAMPLES, MINIMAL_MODEL

SENTINEL = "pf_sentinel_estimators"


@pytest.fixture
def sentinel_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An importable package whose import is detectable (sys.modules and an env flag)."""
    package = tmp_path / SENTINEL
    package.mkdir()
    (package / "__init__.py").write_text("import os\nos.environ['PF_SENTINEL_IMPORTED'] = '1'\n")
    (package / "models.py").write_text("class Evil:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("PF_SENTINEL_IMPORTED", raising=False)
    yield SENTINEL
    for name in [n for n in sys.modules if n.split(".")[0] == SENTINEL]:
        del sys.modules[name]


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("os.system", "disallowed_import"),
        ("subprocess.Popen", "disallowed_import"),
        ("builtins.eval", "disallowed_import"),
        ("sklearn.ensemble.RandomForestClassifier.__init__.__globals__", "invalid_import_path"),
        ("sklearn..x", "invalid_import_path"),
        (".ensemble.RandomForestClassifier", "invalid_import_path"),
        ("sklearn.__builtins__", "invalid_import_path"),
        ("sklearn.ensemble.", "invalid_import_path"),
        ("eval", "invalid_import_path"),
        ("sklearn.ensemble.Random Forest", "invalid_import_path"),
        ("sklearnx.Evil", "disallowed_import"),
        ("x" * 300 + ".A", "invalid_import_path"),
    ],
)
def test_refused_paths(path: str, code: str) -> None:
    error = check_import_path(path, ImportAllowlist())
    assert isinstance(error, DisallowedImportError)
    assert error.code == code
    with pytest.raises(DisallowedImportError):
        require_allowed_import(path, ImportAllowlist())


@pytest.mark.parametrize(
    "path",
    [
        "sklearn.ensemble.HistGradientBoostingClassifier",
        "sklearn.preprocessing.OneHotEncoder",
        "lightgbm.LGBMClassifier",
        "xgboost.XGBClassifier",
        "sklearn.ensemble._forest.RandomForestClassifier",
        "sklearn.linear_model.SomethingNotCatalogued",
        "pfactory.adapters.estimators.Baseline",
    ],
)
def test_accepted_paths(path: str) -> None:
    assert check_import_path(path, ImportAllowlist()) is None


@pytest.mark.parametrize(
    ("path", "suggestion", "code"),
    [
        (
            "sklearn.ensemble.RandomForestClasifier",
            "sklearn.ensemble.RandomForestClassifier",
            "unknown_import",
        ),
        ("sklearn.ensemble.LogisticRegression", "sklearn.linear_model.LogisticRegression", "unknown_import"),
        (
            "sklearn.ensembel.HistGradientBoostingClassifier",
            "sklearn.ensemble.HistGradientBoostingClassifier",
            "unknown_import",
        ),
        ("skleran.preprocessing.StandardScaler", "sklearn.preprocessing.StandardScaler", "disallowed_import"),
        ("lightgbm.LGBMClasifier", "lightgbm.LGBMClassifier", "unknown_import"),
    ],
)
def test_misspelled_paths_get_did_you_mean(path: str, suggestion: str, code: str) -> None:
    error = check_import_path(path, ImportAllowlist())
    assert error is not None
    assert (error.suggestion, error.code) == (suggestion, code)
    assert suggest_import_path(suggestion) is None


def test_checking_never_imports_the_target(sentinel_package: str) -> None:
    allowlist = ImportAllowlist(prefixes=(f"{sentinel_package}.",))
    before = set(sys.modules)
    assert check_import_path(f"{sentinel_package}.models.Evil", allowlist) is None
    text = MINIMAL_MODEL.replace("sklearn.linear_model.LogisticRegression", f"{sentinel_package}.models.Evil")
    config = load_config(text, allowlist=allowlist)
    assert config.spec.pipeline.estimator.import_path == f"{sentinel_package}.models.Evil"
    assert set(sys.modules) - before == set()
    assert "PF_SENTINEL_IMPORTED" not in os.environ
    # The sentinel is detectable: importing it for real shows up in both places.
    importlib.import_module(f"{sentinel_package}.models")
    assert sentinel_package in sys.modules
    assert os.environ["PF_SENTINEL_IMPORTED"] == "1"


def test_os_system_config_is_refused_and_nothing_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[object] = []
    monkeypatch.setattr(os, "system", lambda *a: calls.append(a))
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: calls.append(a))
    before = set(sys.modules)
    with pytest.raises(ConfigError) as caught:
        load_config(EXAMPLES / "broken" / "os_system_estimator.yaml", allowlist=ImportAllowlist())
    (issue,) = caught.value.issues
    assert (issue.line, issue.column, issue.path, issue.code) == (
        23,
        15,
        "spec.pipeline.estimator.import",
        "disallowed_import",
    )
    assert "'os.system' is not allowed" in issue.message
    assert calls == []
    assert set(sys.modules) - before == set()


def test_disallowed_import_in_a_config_suggests_the_catalogued_path() -> None:
    text = MINIMAL_MODEL.replace(
        "sklearn.linear_model.LogisticRegression", "sklearn.linear_model.LogisticRegresion"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(text, filename="m.yaml", allowlist=ImportAllowlist())
    assert str(caught.value.issues[0]) == (
        "m.yaml:18:15: spec.pipeline.estimator.import: unknown import path "
        "'sklearn.linear_model.LogisticRegresion' — did you mean 'sklearn.linear_model.LogisticRegression'?"
    )


def test_settings_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PF_IMPORTS_ALLOWED_PREFIXES", '["mylib"]')
    monkeypatch.setenv("PF_IMPORTS_EXTRA_PREFIXES", '["otherlib.models."]')
    allowlist = ImportAllowlist.from_settings(ImportSettings(use_entry_points=False))
    assert allowlist.prefixes == ("mylib.", "otherlib.models.")
    assert check_import_path("mylib.Model", allowlist) is None
    assert check_import_path("mylibrary.Model", allowlist) is not None
    assert check_import_path("sklearn.linear_model.Ridge", allowlist) is not None


def test_entry_points_extend_the_allowlist_without_importing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dist = tmp_path / "pf_fake_estimators-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: pf-fake-estimators\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[pfactory.estimators]\ntabnet = pf_fake_tabnet.models:TabNetClassifier\nboost = pf_fake_boost\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    allowlist = ImportAllowlist.from_settings(ImportSettings())
    assert "pf_fake_tabnet.models.TabNetClassifier" in allowlist.exact
    assert "pf_fake_boost." in allowlist.prefixes
    assert check_import_path("pf_fake_tabnet.models.TabNetClassifier", allowlist) is None
    assert check_import_path("pf_fake_tabnet.models.Other", allowlist) is not None
    assert check_import_path("pf_fake_boost.Booster", allowlist) is None
    assert not {"pf_fake_tabnet", "pf_fake_boost"} & set(sys.modules)
    off = ImportAllowlist.from_settings(ImportSettings(use_entry_points=False))
    assert check_import_path("pf_fake_boost.Booster", off) is not None


def test_the_default_allowlist_is_kept_until_its_settings_change(monkeypatch: pytest.MonkeyPatch) -> None:
    """Scanning entry points costs ~12 ms per config validated: it is read once per environment."""
    monkeypatch.delenv("PF_IMPORTS_EXTRA_PREFIXES", raising=False)
    first = default_allowlist()
    assert default_allowlist() is first
    monkeypatch.setenv("PF_IMPORTS_EXTRA_PREFIXES", '["mycompany.models"]')
    extended = default_allowlist()
    assert extended is not first and "mycompany.models." in extended.prefixes
    assert "mycompany.models." not in first.prefixes
    monkeypatch.delenv("PF_IMPORTS_EXTRA_PREFIXES")
    assert default_allowlist() is first
