"""docs/ against the code: generated pages current, commands real, links resolvable, settings real.

The reference pages are regenerated from the code and compared; a mutated schema is shown to make the
check (and ``pfactory docs generate --check``) fail. Every ``pfactory …`` command the pages show is
parsed by the real CLI, every relative link must reach a file (and heading), and every ``PF_*`` name
must be a setting some service reads.
"""

from __future__ import annotations

import copy
import re
import shlex
import shutil
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from pfactory.cli.docgen import (
    COMMAND,
    CONFIGS_PAGE,
    Sources,
    check_reference,
    collect_sources,
    config_reference,
    lifecycle_table,
    write_reference,
)
from pfactory.cli.main import app
from tests.deploy.test_deploy_readme import settings_env_names, unknown_env_names

try:  # typer >= 0.20 carries its own copy of click
    from typer._click.exceptions import UsageError
except ImportError:  # pragma: no cover - an older typer on the real click
    from click.exceptions import UsageError

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
PAGES = sorted(DOCS.rglob("*.md"))
READMES = [REPO / "README.md", REPO / "deploy" / "README.md", REPO / "deploy" / "docker" / "README.md"]
"""What a new user reads first: held to the same commands, links and settings checks as docs/."""
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"```[^\n]*\n(.*?)```", re.DOTALL)
SPAN = re.compile(r"`([^`\n]+)`")


@pytest.fixture(scope="module")
def sources() -> Sources:
    return collect_sources()


# ---- generated pages


def test_generated_pages_are_current(sources: Sources) -> None:
    assert check_reference(DOCS, sources) == []


def test_a_changed_schema_field_makes_the_check_fail(sources: Sources) -> None:
    changed = copy.deepcopy(sources)
    resources = changed.config_schemas["Model"]["$defs"]["Resources"]["properties"]
    resources["gpu"]["description"] = "GPUs, counted differently now."
    resources["spot"] = {"type": "boolean", "default": False, "description": "Run on spot capacity."}
    stale = check_reference(DOCS, changed)
    assert len(stale) == 1 and CONFIGS_PAGE in stale[0]
    assert "spec.resources.spot" in stale[0] and "GPUs, counted differently now." in stale[0]


def test_a_changed_transition_makes_the_concepts_block_stale(sources: Sources) -> None:
    changed = copy.deepcopy(sources)
    changed.transitions["rejected"] = ["candidate"]
    stale = check_reference(DOCS, changed)
    assert len(stale) == 1 and "concepts.md" in stale[0]


def test_write_then_check_round_trips(tmp_path: Path, sources: Sources) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    shutil.copy(DOCS / "concepts.md", folder / "concepts.md")
    assert len(write_reference(folder, sources)) == 3  # the three pages; concepts.md was current
    assert check_reference(folder, sources) == []
    assert write_reference(folder, sources) == []


def test_cli_check_exits_1_with_the_fix_command(tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    shutil.copytree(DOCS, folder)
    page = folder / CONFIGS_PAGE
    page.write_text(page.read_text().replace("| `spec.resources.gpu` |", "| `spec.resources.gpus` |"))
    result = CliRunner().invoke(app, ["docs", "generate", "--check", "--folder", str(folder)])
    assert result.exit_code == 1, result.output
    assert "spec.resources.gpu" in result.output and COMMAND in result.output
    fixed = CliRunner().invoke(app, ["docs", "generate", "--folder", str(folder)])
    assert fixed.exit_code == 0 and "configs.md" in fixed.output
    assert CliRunner().invoke(app, ["docs", "generate", "--check", "--folder", str(folder)]).exit_code == 0


def test_missing_markers_are_a_clear_usage_error(tmp_path: Path) -> None:
    (tmp_path / "concepts.md").write_text("# Concepts\n")
    result = CliRunner().invoke(app, ["docs", "generate", "--check", "--folder", str(tmp_path)])
    assert result.exit_code == 2 and "markers" in result.output


def test_every_field_of_the_schema_is_on_the_page(sources: Sources) -> None:
    page = config_reference(sources.config_schemas)
    for kind, schema in sources.config_schemas.items():
        for name in schema["$defs"]["Resources" if kind == "Model" else "Feature"]["properties"]:
            assert f".{name}` |" in page, name
    assert lifecycle_table({"a": ["b"], "b": []}, ["b"]).count("|") > 0


# ---- commands


def _commands(text: str) -> list[str]:
    """Every ``pfactory …`` command in code blocks (comments and continuations handled) and code spans."""
    found: list[str] = []
    blocks = FENCE.findall(text)
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            found.append(line)
    prose = FENCE.sub("", text)
    found += SPAN.findall(prose)
    commands = []
    for line in found:
        words = shlex.split(line, comments=True) if "pfactory " in line else []
        if "pfactory" not in words:
            continue
        words = words[words.index("pfactory") + 1 :]
        for stop in ("|", "&&", ";", ">"):
            if stop in words:
                words = words[: words.index(stop)]
        commands.append(shlex.join(words))
    return commands


def _parse(words: list[str]) -> None:
    """Parse ``pfactory <words>`` with the real command tree; raise ``UsageError`` on anything it refuses."""
    command = typer.main.get_command(app)
    name = "pfactory"
    while hasattr(command, "list_commands") and words and not words[0].startswith("-"):
        sub = command.get_command(command.make_context(name, [], resilient_parsing=True), words[0])
        if sub is None:
            raise UsageError(f"no command {words[0]!r} in {name}")
        name, command, words = f"{name} {words[0]}", sub, words[1:]
    if hasattr(command, "list_commands"):
        raise UsageError(f"{name} needs a subcommand")
    command.make_context(name, list(words))


DOC_COMMANDS = sorted(
    {
        (page.relative_to(REPO).as_posix(), c)
        for page in [*PAGES, REPO / "README.md"]  # deploy/README.md: kubectl -n pfactory …
        for c in _commands(page.read_text())
    }
)


def test_the_docs_show_commands() -> None:
    assert len(DOC_COMMANDS) > 15


@pytest.mark.parametrize(("page", "command"), DOC_COMMANDS)
def test_every_command_parses(page: str, command: str) -> None:
    _parse(shlex.split(command))


@pytest.mark.parametrize(
    "command",
    ["models promote credit-default --version one --to approved", "jobs follow x", "submit", "models card m"],
)
def test_a_wrong_command_is_caught(command: str) -> None:
    with pytest.raises(UsageError):
        _parse(shlex.split(command))


# ---- links


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    return {_slug(m) for m in re.findall(r"^#{1,6} (.+)$", text, re.MULTILINE)}


def broken_links(page: Path) -> list[str]:
    broken = []
    for target in LINK.findall(FENCE.sub("", page.read_text(encoding="utf-8"))):
        if re.match(r"[a-z]+:", target):
            continue
        file_part, _, anchor = target.partition("#")
        path = (page.parent / file_part).resolve() if file_part else page
        if not path.exists() or (anchor and path.suffix == ".md" and anchor not in _anchors(path)):
            broken.append(target)
    return broken


@pytest.mark.parametrize("page", [*PAGES, *READMES], ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_relative_link_resolves(page: Path) -> None:
    assert broken_links(page) == []


def test_a_broken_link_is_caught(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n[ok](#title) [gone](missing.md) [bad anchor](#nothing)\n")
    assert broken_links(page) == ["missing.md", "#nothing"]


def test_every_index_page_is_linked() -> None:
    index = (DOCS / "README.md").read_text()
    for page in PAGES:
        if page.name != "README.md":
            assert f"({page.relative_to(DOCS).as_posix()})" in index, page


# ---- settings


def test_every_pf_name_is_a_setting() -> None:
    known = settings_env_names()
    for page in [*PAGES, *READMES]:
        assert unknown_env_names(page.read_text(), known) == [], page
