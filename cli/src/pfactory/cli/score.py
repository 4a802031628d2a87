"""``pfactory score``: start a batch scoring run on the gateway and, with ``--watch``, follow it to its result."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from pfactory.cli.client import GatewayClient, GatewayError
from pfactory.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    HomeOption,
    KeyOption,
    UrlOption,
    client,
    console,
    fail,
)
from pfactory.cli.stack import DEFAULT_HOME

DEFAULT_PSI_THRESHOLD = 0.2
"""The scorer's default ``spec.scoring.drift.psi_threshold``, used when a result does not name its own."""


def start_scoring_run(gateway: GatewayClient, body: dict[str, Any]) -> dict[str, Any]:
    """POST ``/v1/scoring-runs``; return the 202 (or replayed 200) body.

    Args:
        gateway: the gateway client.
        body: ``model``, ``ds`` and optionally ``version``, ``alias``, ``feature_set``, ``run_id``.

    Raises:
        RegistryRefused: 404/409/422, with the gateway's advice (``--feature-set`` for an ambiguous model).
        GatewayError: the gateway could not be used.
    """
    # the registry's refusal mapping fits: unknown model/version/alias, ambiguous feature set, bad fields
    return gateway._registry_json(gateway._request("POST", "/v1/scoring-runs", json=body))


def get_scoring_run(gateway: GatewayClient, run_id: str) -> dict[str, Any]:
    """GET ``/v1/scoring-runs/{run_id}``."""
    return gateway._registry_json(gateway._request("GET", f"/v1/scoring-runs/{run_id}"))


def drift_lines(result: dict[str, Any]) -> list[str]:
    """The drift summary of a run's result: features over the PSI threshold, largest first, and the score.

    Args:
        result: the run's result, ``drift`` being ``{feature: psi, …, "score": psi}``.

    Returns:
        Lines for people; one saying so when the version has no training reference.
    """
    drift = result.get("drift") or {}
    if not drift:
        return ["drift     not checked (the version has no training reference)"]
    threshold = float(result.get("drift_threshold", DEFAULT_PSI_THRESHOLD))
    features = {name: float(psi) for name, psi in drift.items() if name != "score"}
    over = sorted((name for name, psi in features.items() if psi > threshold), key=lambda n: -features[n])
    moved = ", ".join(f"{name} {features[name]:.3f}" for name in over)
    lines = [
        f"drift     {len(over)} of {len(features)} features over PSI {threshold:g}"
        + (f": {moved}" if over else "")
    ]
    if "score" in drift:
        score = float(drift["score"])
        lines.append(f"score PSI {score:.3f}" + (" (over the threshold)" if score > threshold else ""))
    return lines


def print_outcome(out: Console, run: dict[str, Any]) -> None:
    """Rows, where the predictions are and the drift summary of a finished run; advice when it failed."""
    result = run.get("result") or {}
    if run.get("status") == "succeeded":
        version = result.get("version", run.get("version"))
        out.print(f"rows      {result.get('rows', '?')} scored with version {version}")
        out.print(f"written   {escape(str(result.get('predictions_uri', '?')))}")
        for line in drift_lines(result):
            out.print(escape(line))
        return
    out.print(
        f"[red]advice:[/] read the reason above; the scorer's log has the details. Check the day's features "
        f"exist (pfactory jobs list --kind materialise) and the version loads (pfactory models show "
        f"{escape(str(run.get('model')))}), then run the same command again."
    )


def score(
    model: Annotated[str, typer.Argument(help="The registered model's name.")],
    ds: Annotated[str, typer.Option("--date", help="The day to score (YYYY-MM-DD).")],
    version: Annotated[
        int | None, typer.Option("--version", "-v", min=1, help="Score with this version.")
    ] = None,
    alias: Annotated[
        str | None, typer.Option("--alias", "-a", help="Score with the version holding this alias.")
    ] = None,
    feature_set: Annotated[
        str | None,
        typer.Option(
            "--feature-set", help="<name>@<version>; needed when the model is on several feature sets."
        ),
    ] = None,
    run_id: Annotated[
        str | None,
        typer.Option("--run-id", help="Your own run id: repeating it returns that run, not a new one."),
    ] = None,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Follow the run until it ends.")] = False,
    timeout: Annotated[
        float | None, typer.Option(help="With --watch: give up after this many seconds.")
    ] = None,
    url: UrlOption = None,
    api_key: KeyOption = None,
    home: HomeOption = DEFAULT_HOME,
) -> None:
    """Score a day's features with a model (neither --version nor --alias: the live version).

    With --watch, exit 0 when the run succeeded (rows, predictions location, drift summary), 1 when it failed.
    """
    from pfactory.cli.main import _watch  # main registers this command; import lazily to avoid a cycle

    try:
        day = date.fromisoformat(ds)
    except ValueError:
        fail(f"--date {ds!r} is not a day; write it as YYYY-MM-DD, e.g. --date 2024-07-01", EXIT_USAGE)
    if version is not None and alias is not None:
        fail("pick one of --version or --alias, not both (neither scores the live version)", EXIT_USAGE)
    body = {"model": model, "ds": day.isoformat(), "version": version, "alias": alias}
    body |= {"feature_set": feature_set, "run_id": run_id}
    out = console()
    with client(url, api_key, home) as gateway:
        try:
            run = start_scoring_run(gateway, {key: value for key, value in body.items() if value is not None})
        except GatewayError as error:
            fail(f"the gateway refused the run: {error}", error.exit_code)
        what = f"version {version}" if version else f"alias {alias}" if alias else "the live version"
        verb = "found existing" if run.get("replayed") else "[green]accepted[/]"
        out.print(
            f"{verb} scoring run [bold]{run['run_id']}[/]: {escape(model)} on "
            f"{escape(str(run.get('feature_set')))} with {escape(what)} for {day}"
        )
        out.print(f"location  {escape(str(run.get('location', '')))}")
        if not watch:
            out.print(f"follow it with  pfactory jobs watch {run['run_id']}")
            return
        code = _watch(gateway, str(run["run_id"]), out, timeout=timeout)
        if code in (EXIT_OK, EXIT_FAILED):
            try:
                print_outcome(out, get_scoring_run(gateway, str(run["run_id"])))
            except GatewayError as error:
                fail(str(error), error.exit_code)
    raise typer.Exit(code)
