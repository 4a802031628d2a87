"""``pfactory models``: browse the registry, read model cards, promote versions and move aliases."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from pfactory.cli.client import GatewayClient, GatewayError
from pfactory.cli.common import EXIT_USAGE, HomeOption, KeyOption, UrlOption, client, console, fail
from pfactory.cli.render import models_table, version_detail, version_status_markup, versions_table
from pfactory.cli.stack import DEFAULT_HOME

models_app = typer.Typer(
    help="Browse registered models and versions, read model cards, promote versions (admin key).",
    no_args_is_help=True,
)

FeatureSetOption = Annotated[
    str | None,
    typer.Option(
        "--feature-set",
        help="The pair's feature set as <name>@<version>; needed when the model is registered on several.",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the gateway's JSON.")]


class CardFormat(StrEnum):
    """Formats of a model card."""

    MD = "md"
    HTML = "html"
    JSON = "json"


class Target(StrEnum):
    """Statuses a version is moved to by hand."""

    APPROVED = "approved"
    LIVE = "live"
    REJECTED = "rejected"
    ARCHIVED = "archived"


def _call(gateway: GatewayClient, method: str, *args: Any, **kwargs: Any) -> Any:
    """Call a client method; a refusal or an unreachable gateway exits with its advice."""
    try:
        return getattr(gateway, method)(*args, **kwargs)
    except GatewayError as error:
        fail(str(error), error.exit_code)


@models_app.command("list")
def models_list(
    limit: Annotated[int, typer.Option(min=1, max=200, help="How many models, by name.")] = 50,
    cursor: Annotated[str | None, typer.Option(help="Next page, from a previous listing.")] = None,
    json_output: JsonOption = False,
    url: UrlOption = None,
    api_key: KeyOption = None,
    home: HomeOption = DEFAULT_HOME,
) -> None:
    """List registered models: one row per feature set they are trained on, with the newest and live version."""
    with client(url, api_key, home) as gateway:
        page = _call(gateway, "list_models", limit=limit, cursor=cursor)
    if json_output:
        typer.echo(json.dumps(page, indent=2))
        return
    out = console()
    if not page.get("data"):
        out.print("no models registered yet; a model appears once its first training job is registered")
        return
    out.print(models_table(page["data"]))
    if page.get("next_cursor"):
        out.print(f"more: pfactory models list --cursor {page['next_cursor']}")


@models_app.command("show")
def models_show(
    name: Annotated[str, typer.Argument(help="The model's name.")],
    version: Annotated[int | None, typer.Option("--version", "-v", min=1, help="Show this version.")] = None,
    feature_set: FeatureSetOption = None,
    status: Annotated[str | None, typer.Option(help="Only versions in this status.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=200, help="How many versions, newest first.")] = 20,
    json_output: JsonOption = False,
    url: UrlOption = None,
    api_key: KeyOption = None,
    home: HomeOption = DEFAULT_HOME,
) -> None:
    """Show a model's versions (a table per feature set), or one version's detail with --version."""
    out = console()
    with client(url, api_key, home) as gateway:
        if version is not None:
            detail = _call(gateway, "get_version", name, version, feature_set=feature_set)
            if json_output:
                typer.echo(json.dumps(detail, indent=2))
            else:
                version_detail(out, detail)
            return
        if feature_set is None:
            model = _call(gateway, "get_model", name)
            feature_sets = [str(pair["feature_set"]) for pair in model.get("pairs", [])]
        else:
            feature_sets = [feature_set]
        pages = {
            fs: _call(gateway, "list_versions", name, feature_set=fs, status=status, limit=limit)
            for fs in feature_sets
        }
    if json_output:
        typer.echo(json.dumps(pages, indent=2))
        return
    for fs, page in pages.items():
        title = f"{name} on {fs}"
        if not page.get("data"):
            out.print(f"{escape(title)}: no versions" + (f" in status {escape(status)}" if status else ""))
            continue
        out.print(versions_table(page["data"], title=title))
        if page.get("next_cursor"):
            out.print(f"older versions: pfactory models show {name} --feature-set {fs} --limit {limit * 2}")
    out.print(
        f"one version: pfactory models show {name} --version <n>"
        + (" --feature-set <fs@v>" if len(pages) > 1 else "")
    )


@models_app.command("card")
def models_card(
    name: Annotated[str, typer.Argument(help="The model's name.")],
    version: Annotated[int, typer.Option("--version", "-v", min=1, help="The version.")],
    fmt: Annotated[CardFormat, typer.Option("--format", "-f", help="md, html or json.")] = CardFormat.MD,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write to this file instead of stdout.")
    ] = None,
    feature_set: FeatureSetOption = None,
    url: UrlOption = None,
    api_key: KeyOption = None,
    home: HomeOption = DEFAULT_HOME,
) -> None:
    """Print (or write) a version's model card as Markdown, HTML or JSON."""
    with client(url, api_key, home) as gateway:
        text = _call(gateway, "get_card", name, version, fmt=fmt.value, feature_set=feature_set)
    if out is None:
        typer.echo(text)
        return
    try:
        out.write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
    except OSError as error:
        fail(f"cannot write {out}: {error.strerror or error}", EXIT_USAGE)
    console().print(f"wrote the {fmt.value} card of {escape(name)} v{version} to {escape(str(out))}")


@models_app.command("promote")
def models_promote(
    name: Annotated[str, typer.Argument(help="The model's name.")],
    version: Annotated[int, typer.Option("--version", "-v", min=1, help="The version.")],
    to: Annotated[Target, typer.Option("--to", help="approved, live, rejected or archived.")],
    reason: Annotated[str | None, typer.Option(help="Why; recorded in the audit trail.")] = None,
    override: Annotated[
        bool, typer.Option("--override", help="Approve a version that failed its gates (needs --reason).")
    ] = False,
    feature_set: FeatureSetOption = None,
    url: UrlOption = None,
    api_key: KeyOption = None,
    home: HomeOption = DEFAULT_HOME,
) -> None:
    """Move a version to another status (admin key). Only legal transitions are accepted."""
    if override and not (reason and reason.strip()):
        fail("--override needs --reason '<why>' (it is recorded in the audit trail)", EXIT_USAGE)
    with client(url, api_key, home) as gateway:
        changed = _call(
            gateway,
            "update_status",
            name,
            version,
            to.value,
            reason=reason,
            override=override,
            feature_set=feature_set,
        )
    note = " (admin override recorded)" if override else ""
    console().print(
        f"{escape(name)} v{changed['version']} on {escape(str(changed['feature_set']))} is now "
        f"{version_status_markup(changed['status'])}{note}"
    )


@models_app.command("alias")
def models_alias(
    name: Annotated[str, typer.Argument(help="The model's name.")],
    alias: Annotated[str, typer.Argument(help="e.g. champion, challenger.")],
    version: Annotated[int, typer.Option("--version", "-v", min=1, help="The version to hold the alias.")],
    feature_set: FeatureSetOption = None,
    url: UrlOption = None,
    api_key: KeyOption = None,
    home: HomeOption = DEFAULT_HOME,
) -> None:
    """Point an alias at a version, taking it from the version that held it (admin key)."""
    with client(url, api_key, home) as gateway:
        holder = _call(gateway, "set_alias", name, alias, version, feature_set=feature_set)
    console().print(
        f"{escape(alias)} → {escape(name)} v{holder['version']} on {escape(str(holder['feature_set']))}"
    )
