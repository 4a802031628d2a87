"""``pfactory``: run the embedded stack, validate and submit configs, follow jobs, browse the registry.

Exit codes: 0 done; 1 the input or the job failed (invalid config, failed job, unknown job or
model version, a change the registry refused);
2 usage error; 3 the platform could not be used (gateway unreachable, key refused, stack did not
start); 4 gave up waiting (``--timeout``).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from pfactory.cli.client import ConfigRejected, GatewayClient, GatewayError
from pfactory.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_PLATFORM,
    EXIT_TIMEOUT,
    EXIT_USAGE,
    HomeOption,
    KeyOption,
    UrlOption,
)
from pfactory.cli.common import client as _client
from pfactory.cli.common import console as _console
from pfactory.cli.common import err_console as _err_console
from pfactory.cli.common import fail as _fail
from pfactory.cli.events import REQUEST_TOPICS, find_job_events
from pfactory.cli.models import models_app
from pfactory.cli.render import (
    TERMINAL,
    job_detail_table,
    print_issues,
    print_jobs,
    progress_text,
    status_markup,
)
from pfactory.cli.score import score
from pfactory.cli.stack import DEFAULT_HOME, Stack, StackError, read_stack_state

app = typer.Typer(
    name="pfactory",
    help="Prediction Factory: YAML configs → features → trained models → registry → scheduled scoring.",
    epilog="Exit codes: 0 ok · 1 invalid config / failed job · 2 usage · 3 platform unreachable · 4 timeout.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
jobs_app = typer.Typer(help="List, show and follow jobs.", no_args_is_help=True)
schema_app = typer.Typer(help="JSON Schemas of the config kinds (for editors and CI).", no_args_is_help=True)
app.add_typer(jobs_app, name="jobs")
app.add_typer(schema_app, name="schema")
app.add_typer(models_app, name="models")
app.command()(score)


# ---------------------------------------------------------------------------------------- up


class _Terminated(Exception):
    """SIGTERM arrived."""


def _raise_terminated(_signum: int, _frame: FrameType | None) -> None:
    raise _Terminated


def _shown_path(path: Path | None) -> str:
    """A path relative to the working folder when it is inside it (shorter to read and to copy)."""
    if path is None:
        return "-"
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _stack_table(stack: Stack) -> Table:
    ready = stack.readiness()
    table = Table(title="Prediction Factory — embedded stack", title_justify="left")
    table.add_column("service", no_wrap=True)
    table.add_column("pid", no_wrap=True)
    table.add_column("endpoint", no_wrap=True)
    table.add_column("ready", no_wrap=True)
    table.add_column("log", overflow="fold")
    assert stack.broker is not None
    table.add_row(
        "broker (Tansu)", "-", stack.bootstrap_servers, "[green]yes[/]", _shown_path(stack.broker.log_path)
    )
    for service in stack.services:
        mark = "[green]yes[/]" if ready.get(service.name) else "[yellow]not yet[/]"
        table.add_row(service.name, str(service.pid), service.url, mark, _shown_path(service.log_path))
    return table


def _exit_summary(codes: dict[str, int | None]) -> str:
    def describe(code: int | None) -> str:
        if code in (0, -signal.SIGTERM):  # uvicorn re-raises SIGTERM after a graceful shutdown
            return "stopped"
        if code is None:
            return "[red]could not be reaped[/]"
        if code < 0:
            return f"[red]killed by {signal.Signals(-code).name}[/]"
        return f"[red]exit {code}[/]"

    return ", ".join(f"{name} {describe(code)}" for name, code in codes.items())


@app.command()
def up(
    home: HomeOption = DEFAULT_HOME,
    port: Annotated[
        int | None, typer.Option("--port", help="Broker port [default: 9092 if free, else any free port].")
    ] = None,
    gateway_port: Annotated[
        int | None, typer.Option("--gateway-port", help="Gateway port [default: 8080 if free, else any].")
    ] = None,
    health_timeout: Annotated[float, typer.Option(help="Seconds each service may take to start.")] = 120.0,
) -> None:
    """Run the embedded stack (Tansu broker, gateway, five workers) until Ctrl-C or SIGTERM."""
    console = _console()
    stack = Stack(home, broker_port=port, gateway_port=gateway_port, health_timeout_s=health_timeout)
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    code = EXIT_OK
    try:
        try:
            stack.start(on_progress=lambda line: console.print(f"[dim]•[/] {escape(line)}"))
        except StackError as error:
            _fail(f"the stack did not start: {error}", EXIT_PLATFORM)
        assert stack.credentials is not None
        console.print(_stack_table(stack))
        console.print(f"gateway  [bold]{stack.gateway_url}[/]  (API docs: {stack.gateway_url}/docs)")
        note = " (new key)" if stack.credentials.created else ""
        console.print(f"admin key file  [bold]{_shown_path(stack.credentials.path)}[/]{note}")
        console.print(
            "try  [bold]pfactory submit examples/<config>.yaml --watch[/]   ·   Ctrl-C stops everything"
        )
        while True:
            for gone in stack.exited():
                console.print(
                    f"[red]{gone.name} exited with code {gone.exit_code}[/]; last lines of {gone.log_path}:\n"
                    f"{escape(gone.log_tail)}"
                )
            if stack.all_exited():
                console.print("[red]every service has stopped; shutting the stack down[/]")
                code = EXIT_PLATFORM
                break
            time.sleep(0.5)
    except (KeyboardInterrupt, _Terminated):
        console.print("\nstopping the stack…")
    finally:
        # A second Ctrl-C must not leave children behind half-stopped.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            codes = stack.stop()
        finally:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, previous)
        if codes:
            console.print("stack stopped: " + _exit_summary(codes))
    raise typer.Exit(code)


# ---------------------------------------------------------------------------------- validate


def _read_config(path: Path) -> str:
    text = path.read_text(encoding="utf-8")
    # The loader reads a one-line text ending in .yaml as a path; a final newline keeps it text.
    return text if text.endswith("\n") else text + "\n"


def validate_file(path: Path) -> dict[str, Any]:
    """Validate one config file; the result is JSON-able: ``{file, valid, kind?, name?, issues}``."""
    from pfactory.contracts.issues import ConfigError
    from pfactory.contracts.loader import load_config

    try:
        text = _read_config(path)
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        issue = {
            "file": str(path),
            "line": None,
            "column": None,
            "path": "<root>",
            "message": f"cannot read the file: {reason}",
            "expected": None,
            "suggestion": None,
            "code": "unreadable",
        }
        return {"file": str(path), "valid": False, "issues": [issue]}
    try:
        config = load_config(text, filename=str(path))
    except ConfigError as error:
        return {"file": str(path), "valid": False, "issues": error.as_dicts()}
    name = getattr(getattr(config, "metadata", None), "name", None)
    return {"file": str(path), "valid": True, "kind": config.kind, "name": name, "issues": []}


@app.command()
def validate(
    files: Annotated[list[Path], typer.Argument(help="Config files (FeatureSet, Model).")],
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON document instead.")] = False,
) -> None:
    """Check configs locally; print every problem as file:line:col. Exit 1 if any file is invalid."""
    results = [validate_file(path) for path in files]
    ok = all(result["valid"] for result in results)
    if json_output:
        typer.echo(json.dumps({"valid": ok, "files": results}, indent=2))
    else:
        console = _console()
        for result in results:
            if result["valid"]:
                console.print(
                    f"[green]✓[/] {escape(result['file'])}: {result['kind']} "
                    f"[bold]{escape(str(result['name']))}[/] is valid"
                )
            else:
                print_issues(console, result["issues"], filename=result["file"])
                count = len(result["issues"])
                console.print(
                    f"[red]✗[/] {escape(result['file'])}: {count} problem{'s' if count != 1 else ''}"
                )
        bad = sum(not r["valid"] for r in results)
        if len(results) > 1:
            console.print(f"{len(results) - bad} valid, {bad} invalid")
    raise typer.Exit(EXIT_OK if ok else EXIT_FAILED)


# ------------------------------------------------------------------------------------ submit


@app.command()
def submit(
    file: Annotated[Path, typer.Argument(help="A FeatureSet or Model config.")],
    url: UrlOption = None,
    api_key: KeyOption = None,
    home: HomeOption = DEFAULT_HOME,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Follow the job until it ends.")] = False,
    start_ds: Annotated[str | None, typer.Option(help="FeatureSet: first day (YYYY-MM-DD).")] = None,
    end_ds: Annotated[str | None, typer.Option(help="FeatureSet: last day, inclusive.")] = None,
    timeout: Annotated[
        float | None, typer.Option(help="With --watch: give up after this many seconds.")
    ] = None,
    show_event: Annotated[
        bool,
        typer.Option(
            "--show-event/--no-show-event",
            help="Read the job's request event back from its topic (needs the broker: the local stack's, "
            "or PF_BUS_BOOTSTRAP_SERVERS).",
        ),
    ] = True,
) -> None:
    """Submit a config to the gateway; print the job id, its request event on the bus, and where to follow it."""
    console = _console()
    try:
        text = _read_config(file)
    except (OSError, UnicodeDecodeError) as error:
        _fail(f"cannot read {file}: {error}", EXIT_USAGE)
    extra = {k: v for k, v in {"start_ds": start_ds, "end_ds": end_ds}.items() if v}
    with _client(url, api_key, home) as client:
        try:
            job = client.submit(text, str(file), **extra)
        except ConfigRejected as rejected:
            print_issues(_err_console(), rejected.issues, filename=str(file))
            _fail(f"the gateway refused {file}: {rejected.summary}", EXIT_FAILED)
        except GatewayError as error:
            _fail(str(error), error.exit_code)
        console.print(
            f"[green]accepted[/] {job.get('kind', '')} [bold]{escape(str(job.get('name', '')))}[/]: "
            f"job [bold]{job['job_id']}[/]"
        )
        console.print(f"location  {escape(str(job.get('location', '')))}")
        if show_event:
            _print_request_event(console, home, job)
        if not watch:
            console.print(f"follow it with  pfactory jobs watch {job['job_id']}")
            return
        raise typer.Exit(_watch(client, job["job_id"], console, timeout=timeout))


def _print_request_event(console: Console, home: Path, job: dict[str, Any]) -> None:
    state = read_stack_state(home) or {}
    bootstrap = os.environ.get("PF_BUS_BOOTSTRAP_SERVERS") or state.get("bootstrap_servers")
    topic = REQUEST_TOPICS.get(str(job.get("kind")))
    if not bootstrap or not topic:
        return  # a remote gateway: the bus is not ours to read
    seen = asyncio.run(find_job_events(str(bootstrap), topic, [str(job["job_id"])], timeout_s=15))
    if found := seen.get(str(job["job_id"])):
        console.print(f"event     {escape(found.describe())}", soft_wrap=True)
    else:
        console.print(
            f"[yellow]event not on {topic} yet[/]: the gateway keeps it in its outbox and publishes it "
            "when the broker answers (check `pfactory jobs show`)",
            soft_wrap=True,
        )


def _brief(result: dict[str, Any], longest: int = 3) -> dict[str, Any]:
    """A job result for one line: long lists shortened (`jobs show --json` has them whole)."""
    return {
        key: [*value[:longest], f"… {len(value) - longest} more"]
        if isinstance(value, list) and len(value) > longest
        else value
        for key, value in result.items()
    }


# -------------------------------------------------------------------------------------- jobs


@jobs_app.command("list")
def jobs_list(
    status: Annotated[str | None, typer.Option(help="accepted, queued, running, succeeded, failed")] = None,
    kind: Annotated[str | None, typer.Option(help="materialise, train, score")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500, help="How many jobs, newest first.")] = 20,
    cursor: Annotated[str | None, typer.Option(help="Next page, from a previous listing.")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the gateway's JSON.")] = False,
    url: UrlOption = None,
    api_key: KeyOption = None,
    home: HomeOption = DEFAULT_HOME,
) -> None:
    """List jobs, newest first."""
    with _client(url, api_key, home) as client:
        try:
            page = client.list_jobs(status=status, kind=kind, limit=limit, cursor=cursor)
        except GatewayError as error:
            _fail(str(error), error.exit_code)
    if json_output:
        typer.echo(json.dumps(page, indent=2))
        return
    items = page.get("data", page.get("items", []))
    console = _console()
    if not items:
        console.print("no jobs" + (" match" if status or kind else " yet; submit one with `pfactory submit`"))
        return
    print_jobs(console, items)
    if page.get("next_cursor"):
        console.print(f"more: pfactory jobs list --cursor {page['next_cursor']}")


@jobs_app.command("show")
def jobs_show(
    job_id: Annotated[str, typer.Argument(help="The job id printed by submit.")],
    json_output: Annotated[bool, typer.Option("--json", help="Print the gateway's JSON.")] = False,
    url: UrlOption = None,
    api_key: KeyOption = None,
    home: HomeOption = DEFAULT_HOME,
) -> None:
    """Show one job's current state."""
    with _client(url, api_key, home) as client:
        try:
            job = client.get_job(job_id)
        except GatewayError as error:
            _fail(str(error), error.exit_code)
    if json_output:
        typer.echo(json.dumps(job, indent=2))
    else:
        _console().print(job_detail_table(job))


@jobs_app.command("watch")
def jobs_watch(
    job_id: Annotated[str, typer.Argument(help="The job id printed by submit.")],
    timeout: Annotated[float | None, typer.Option(help="Give up after this many seconds (exit 4).")] = None,
    interval: Annotated[float, typer.Option(min=0.1, help="Seconds between polls.")] = 0.5,
    url: UrlOption = None,
    api_key: KeyOption = None,
    home: HomeOption = DEFAULT_HOME,
) -> None:
    """Follow a job until it ends: exit 0 when it succeeded, 1 when it failed (with the reason)."""
    with _client(url, api_key, home) as client:
        raise typer.Exit(_watch(client, job_id, _console(), timeout=timeout, interval=interval))


def _watch(
    client: GatewayClient, job_id: str, console: Console, *, timeout: float | None, interval: float = 0.5
) -> int:
    deadline = None if timeout is None else time.monotonic() + timeout
    last: tuple[Any, ...] | None = None
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(f"job {job_id}", total=None)
        while True:
            try:
                job = client.get_job(job_id)
            except GatewayError as error:
                bar.stop()
                _fail(str(error), error.exit_code)
            status, stage, progress = job.get("status"), job.get("stage") or "", job.get("progress")
            state = (status, stage, json.dumps(progress, sort_keys=True))
            if state != last:
                last = state
                note = progress_text(progress)
                console.print(
                    f"{time.strftime('%H:%M:%S')}  {status_markup(status)}"
                    + (f"  {escape(stage)}" if stage else "")
                    + (f"  — {escape(note)}" if note else "")
                )
            bar.update(
                task,
                description=f"{status} {stage}".strip(),
                total=(progress or {}).get("total"),
                completed=(progress or {}).get("done", 0),
            )
            if job.get("terminal") or status in TERMINAL:
                break
            if deadline is not None and time.monotonic() > deadline:
                bar.stop()
                console.print(f"[yellow]gave up after {timeout:g} s[/]; the job is still {status}")
                return EXIT_TIMEOUT
            time.sleep(interval)
    if status == "succeeded":
        result = job.get("result") or {}
        console.print(
            f"[green]succeeded[/] job {job_id}"
            + (f": {escape(json.dumps(_brief(result)))}" if result else "")
        )
        return EXIT_OK
    console.print(f"[red]failed[/] job {job_id}: {escape(str(job.get('reason') or 'no reason given'))}")
    return EXIT_FAILED


# ------------------------------------------------------------------------------------ schema


@schema_app.command("export")
def schema_export(
    out_dir: Annotated[Path, typer.Argument(help="Folder to write the *.schema.json files to.")] = Path(
        "schemas"
    ),
) -> None:
    """Write the JSON Schema of each config kind (featureset.schema.json, model.schema.json)."""
    from pfactory.contracts.schema import export_schemas

    written = export_schemas(out_dir)
    console = _console()
    for path in written:
        console.print(f"wrote {escape(str(path))}")


# -------------------------------------------------------------------------------------- docs

docs_app = typer.Typer(help="The generated reference pages of docs/ (configs, HTTP API, events).")
app.add_typer(docs_app, name="docs")


@docs_app.command("generate")
def docs_generate(
    folder: Annotated[Path, typer.Option(help="The docs folder.")] = Path("docs"),
    check: Annotated[
        bool, typer.Option("--check", help="Write nothing; exit 1 with a diff summary if a page is stale.")
    ] = False,
) -> None:
    """Regenerate docs/reference/*.md and the lifecycle table of docs/concepts.md from the code."""
    from pfactory.cli.docgen import COMMAND, DocgenError, check_reference, write_reference

    console = _console()
    try:
        if check:
            stale = check_reference(folder)
            for summary in stale:
                console.print(escape(summary), soft_wrap=True)
            if stale:
                _fail(
                    f"{len(stale)} generated page(s) are stale; run `{COMMAND} --folder {folder}`",
                    EXIT_FAILED,
                )
            console.print(f"[green]✓[/] the generated pages of {escape(str(folder))} are current")
            return
        written = write_reference(folder)
    except DocgenError as error:
        _fail(str(error), EXIT_USAGE)
    for path in written:
        console.print(f"wrote {escape(str(path))}")
    if not written:
        console.print(f"the generated pages of {escape(str(folder))} were already current")


# -------------------------------------------------------------------------------------- demo


@app.command()
def demo(
    home: HomeOption = DEFAULT_HOME,
    examples: Annotated[Path, typer.Option(help="Folder of example configs.")] = Path("examples"),
    days: Annotated[
        int, typer.Option(min=3, help="Days of history to generate, materialise and train on (ending today).")
    ] = 60,
) -> None:
    """The credit-scoring story on the embedded stack: features, training, governance, scheduling, scoring."""
    from pfactory.cli.demo import run_demo

    raise typer.Exit(run_demo(_console(), home=home, examples=examples, days=days))


def main() -> None:
    """Console-script entry point."""
    app()
