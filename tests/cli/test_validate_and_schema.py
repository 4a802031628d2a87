"""``pfactory validate`` and ``pfactory schema export``, through the real command line parser."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pfactory.cli.main import app

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
runner = CliRunner()

# (text in the example model, replacement, what the message must say)
MISTAKES = [
    ('    path: "data/raw/labels/"', '    pth: "data/raw/labels/"', "did you mean 'path'?"),
    (
        "  task: binary_classification",
        "  task: binary_clasification",
        "did you mean 'binary_classification'?",
    ),
    ("        learning_rate: 0.1\n", "        learnin_rate: 0.1\n", "did you mean 'learning_rate'?"),
]


@pytest.fixture
def model_with_three_mistakes(tmp_path: Path) -> tuple[Path, list[int]]:
    """The example model with three typos; returns the file and the 1-based lines of the typos."""
    text = (EXAMPLES / "credit_model.yaml").read_text()
    lines = []
    for good, bad, _ in MISTAKES:
        assert text.count(good) == 1, f"the example model changed: {good!r} is not there once"
        lines.append(text[: text.index(good)].count("\n") + 1)
        text = text.replace(good, bad)
    path = tmp_path / "model_with_mistakes.yaml"
    path.write_text(text)
    return path, lines


def test_valid_examples_exit_0() -> None:
    result = runner.invoke(
        app, ["validate", str(EXAMPLES / "credit_features.yaml"), str(EXAMPLES / "credit_model.yaml")]
    )
    assert result.exit_code == 0, result.output
    assert "credit_features.yaml: FeatureSet credit-features is valid" in result.output
    assert "credit_model.yaml: Model credit-default is valid" in result.output


def test_every_mistake_is_shown_with_its_line_and_exit_1(
    model_with_three_mistakes: tuple[Path, list[int]],
) -> None:
    path, lines = model_with_three_mistakes
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 1, result.output
    out = result.output
    for line, (_, _, hint) in zip(lines, MISTAKES, strict=True):
        shown = [row for row in out.splitlines() if row.startswith(f"{path}:{line}:")]
        assert shown, f"no diagnostic for line {line} in:\n{out}"
        assert hint in shown[0]
    assert "3 problems" in out


def test_a_good_and_a_bad_file_together_exit_1_and_report_both(
    model_with_three_mistakes: tuple[Path, list[int]],
) -> None:
    bad, _ = model_with_three_mistakes
    result = runner.invoke(app, ["validate", str(EXAMPLES / "credit_features.yaml"), str(bad)])
    assert result.exit_code == 1
    assert "is valid" in result.output and "1 valid, 1 invalid" in result.output


def test_json_output_lists_issues_with_positions(model_with_three_mistakes: tuple[Path, list[int]]) -> None:
    path, lines = model_with_three_mistakes
    result = runner.invoke(app, ["validate", "--json", str(path)])
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["valid"] is False
    issues = report["files"][0]["issues"]
    assert sorted(issue["line"] for issue in issues) == sorted(lines)
    assert {issue["suggestion"] for issue in issues} == {"path", "binary_classification", "learning_rate"}


def test_a_missing_file_is_an_issue_not_a_traceback(tmp_path: Path) -> None:
    result = runner.invoke(app, ["validate", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 1
    assert "nope.yaml: <root>: cannot read the file" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_schema_export_writes_one_schema_per_kind(tmp_path: Path) -> None:
    out = tmp_path / "schemas"
    result = runner.invoke(app, ["schema", "export", str(out)])
    assert result.exit_code == 0, result.output
    written = sorted(p.name for p in out.iterdir())
    assert {"featureset.schema.json", "model.schema.json"} <= set(written)
    model = json.loads((out / "model.schema.json").read_text())
    assert "properties" in model and "spec" in model["properties"]
    for name in written:
        assert f"wrote {out / name}" in result.output
