"""``pfactory demo``: the credit-scoring story through the real stack, shown step by step.

It generates the seeded example credit data (the days ending today, plus tomorrow's), then each
config is validated, accepted by the gateway, persisted and published as its request event (read
back here from its topic). The feature set is backfilled over the history into validated
partitions; once they exist the model configs are submitted (their training window set to the
generated history), their sweeps trained in isolated runs (progress: runs done out of the total)
and registered, and the demo says what each registered: the champion, its primary metric with a
confidence interval, the fairness verdict (the injected bias is flagged) and where the model card
is. Then (:mod:`pfactory.cli.demo_scoring`) the champion is approved with a recorded override, the
embedded scheduler schedules it, takes it live the next day and scores that day, and the drift
check is shown. Each step is timed; the recap says where to look next.
"""

from __future__ import annotations

import asyncio
import importlib.util
import re
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from rich.console import Console
from rich.markup import escape

from pfactory.bus.reading import SeenEnvelope
from pfactory.cli.client import ConfigRejected, GatewayClient, GatewayError
from pfactory.cli.credentials import read_credentials
from pfactory.cli.demo_scoring import Champion, govern, score_next_day, wait_for_deployment
from pfactory.cli.demo_training import follow_training, summarise_training
from pfactory.cli.events import REQUEST_TOPICS, find_job_events
from pfactory.cli.render import TERMINAL, JobBars, print_issues, print_jobs
from pfactory.cli.score import print_outcome
from pfactory.cli.stack import Stack, StackError, http_status, read_stack_state

KIND_ORDER = {"FeatureSet": 0, "Model": 1}
DEMO_DAYS = 60
"""Days of history the demo generates and materialises (``pfactory demo --days``)."""
DEMO_APPLICANTS_PER_DAY = 2000
DEMO_ZONE = ZoneInfo("Europe/London")
"""Where "today" is, when no model config names its scoring timezone."""
_WINDOW = re.compile(r"(\n(\s*)window:[ \t]*\n\s*start:[ \t]*)\S+([ \t]*\n\s*end:[ \t]*)\S+")


@dataclass(frozen=True)
class DemoDays:
    """The demo's calendar: ``days`` of history ending today, and the next day the scheduler scores."""

    today: date
    days: int

    @property
    def start(self) -> date:
        return self.today - timedelta(days=self.days - 1)

    @property
    def next_day(self) -> date:
        return self.today + timedelta(days=1)


@dataclass
class Submission:
    """One example config and what became of it."""

    path: Path
    job: dict[str, Any] | None = None
    seen: SeenEnvelope | None = None


@dataclass
class Clock:
    """Times each step of the demo and prints how long it took."""

    console: Console
    took: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def step(self, title: str, name: str) -> Iterator[None]:
        """Print ``title`` as a rule, run the step, then print and keep its duration under ``name``."""
        if title:
            self.console.rule(title)
        start = time.monotonic()
        try:
            yield
        finally:
            self.took[name] = time.monotonic() - start
            self.console.print(f"[dim]{escape(name)} took {self.took[name]:.1f} s[/]")

    def recap(self) -> str:
        """``stack 11.2 s · data 2.0 s · … · total 95.3 s``."""
        parts = [f"{name} {seconds:.1f} s" for name, seconds in self.took.items()]
        return " · ".join([*parts, f"total {sum(self.took.values()):.1f} s"])


def _kind(path: Path) -> str:
    from pfactory.contracts.loader import load_config

    try:
        return load_config(path).kind
    except Exception:  # an invalid example is submitted anyway: the gateway's answer is the point
        return ""


def example_configs(folder: Path) -> list[Path]:
    """The example configs to submit, feature sets before models (``broken/`` and friends excluded)."""
    found = [(KIND_ORDER.get(_kind(path), 2), path.name, path) for path in sorted(folder.glob("*.y*ml"))]
    return [path for _, _, path in sorted(found)]


def run_demo(console: Console, *, home: Path, examples: Path, days: int = DEMO_DAYS) -> int:
    """Run the demo; returns the exit code.

    0 only if every config was accepted and its event seen, the features materialised, every model
    config trained and registered a version, and the champion was scheduled, went live and scored
    the next day.
    """
    if days < 3:
        console.print(f"[red]error:[/] --days {days}: the demo needs at least 3 days of history to train on")
        return 2
    configs = example_configs(examples)
    if not configs:
        console.print(f"[red]error:[/] no *.yaml configs in {examples}")
        return 2
    models = [path for path in configs if _kind(path) == "Model"]
    features = [path for path in configs if path not in models]  # invalid ones too: the answer is the point
    scheduled = _scheduled_model(models)
    zone = scheduled[1] if scheduled else DEMO_ZONE
    calendar = DemoDays(datetime.now(zone).date(), days)
    console.rule("[bold]Prediction Factory demo")
    clock = Clock(console)
    submissions: list[Submission] = []
    registered: list[bool] = []
    scored: dict[str, Any] | None = None
    stack: Stack | None = None
    with ExitStack() as cleanup:
        state = read_stack_state(home)
        credentials = read_credentials(home)
        # a stack killed without cleaning up leaves its stack.json behind: only a live gateway counts
        if (
            state
            and credentials
            and state.get("bootstrap_servers")
            and http_status(f"{state.get('gateway_url')}/health") == 200
        ):
            gateway_url, bootstrap = str(state["gateway_url"]), str(state["bootstrap_servers"])
            api_key = credentials.api_key
            console.print(f"using the stack already running from {home} (gateway {gateway_url})")
        else:
            stack = Stack(home)
            console.print("starting the embedded stack (Tansu broker, gateway, five workers)…")
            with clock.step("", "stack start"):
                try:
                    stack.start(on_progress=lambda line: console.print(f"[dim]•[/] {escape(line)}"))
                except StackError as error:
                    console.print(f"[red]error:[/] the stack did not start: {escape(str(error))}")
                    return 3
            cleanup.callback(_stop_stack, console, stack)
            gateway_url, bootstrap, api_key = stack.gateway_url, stack.bootstrap_servers, stack.api_key
            console.print(f"stack up: gateway {gateway_url}, broker {bootstrap}, logs in {stack.logs_dir}")
        client = cleanup.enter_context(GatewayClient(gateway_url, api_key))
        with clock.step("0. generate the example credit data", "data"):
            generated = _generate_data(console, examples, home.resolve().parent / "data" / "raw", calendar)
        if not generated:
            return 1
        title = f"1. submit the feature set (backfill {calendar.start} to {calendar.today})"
        with clock.step(title, "submit"):
            submissions += _submit_all(console, client, features, calendar)
        with clock.step("2. read each job's request event back from its topic", "events"):
            _find_events(console, bootstrap, submissions)
        title = f"3. materialise {days} days of features (Spark, Great Expectations, lineage)"
        with clock.step(title, "features"):
            features_ok = _follow_materialisations(console, client, submissions)
        if features_ok and models:
            trained = _train(console, client, clock, bootstrap, models, calendar)
            submissions += trained
            jobs = [s.job for s in trained if s.job]
            with clock.step("5. train: every sweep trial an isolated run, then register", "training"):
                finished = follow_training(console, client, jobs)
            with clock.step("6. what was registered", "summary"):
                registered = [
                    summarise_training(console, client, gateway_url, job, home=home) for job in finished
                ]
                truth = home.resolve().parent / "data" / "raw" / "ground_truth.json"
                console.print(
                    f"[dim]the example labels carry an injected bias against the 18-24 age band ({truth}): "
                    "the fairness gates are meant to catch it, and a model that learns it is not approved.[/]"
                )
            champion = _champion(finished, scheduled)
            if champion is not None and all(registered):
                scored = _go_live_and_score(
                    console, clock, client, stack, bootstrap, champion, features, calendar, submissions
                )
            elif all(registered):
                console.print("[yellow]no registered model has a scoring schedule[/]: nothing to take live")
        elif models:
            console.print("[yellow]the models were not submitted[/]: their features did not materialise")
        _show_states(console, client, submissions, home)
        if scored is not None:
            _where_next(console, gateway_url, home, scored)
    accepted = [s for s in submissions if s.job]
    models_ok = bool(registered) and len(registered) == len(models) and all(registered)
    scored_ok = scored is not None or scheduled is None
    ok = (
        len(accepted) == len(submissions)
        and all(s.seen for s in submissions)
        and features_ok
        and ((models_ok and scored_ok) or not models)
    )
    console.print(f"[dim]timings: {escape(clock.recap())}[/]")
    if ok:
        console.print(
            f"[green]demo passed[/]: {len(submissions)} configs accepted, each request event seen on the bus, "
            f"{days} days of features materialised and validated under {home}/features, "
            f"{len(models)} model(s) trained and registered under {home}/registry"
            + (f", {calendar.next_day} scored by the scheduler" if scored else "")
        )
    else:
        console.print(
            "[red]demo failed[/]: a config was refused, a request event never reached the bus, "
            "the features did not materialise, a model did not train and register, or the next day was "
            f"not scored (see the reasons above and the logs under {home}/logs)"
        )
    return 0 if ok else 1


def _scheduled_model(models: list[Path]) -> tuple[str, ZoneInfo, str] | None:
    """The first model config with a scoring schedule: its name, timezone and cron."""
    from pfactory.contracts.loader import load_config

    for path in models:
        try:
            config: Any = load_config(path)
        except Exception:
            continue
        scoring = getattr(config.spec, "scoring", None)
        if scoring is not None and getattr(scoring, "schedule", None):
            return config.metadata.name, ZoneInfo(scoring.timezone), str(scoring.schedule)
    return None


def _champion(finished: list[dict[str, Any]], scheduled: tuple[str, ZoneInfo, str] | None) -> Champion | None:
    if scheduled is None:
        return None
    name, zone, cron = scheduled
    for job in finished:
        result = job.get("result") or {}
        if job.get("name") == name and isinstance(result.get("version"), int):
            return Champion(name, result["version"], str(result.get("feature_set")), cron, zone)
    return None


def _go_live_and_score(
    console: Console,
    clock: Clock,
    client: GatewayClient,
    stack: Stack | None,
    bootstrap: str,
    champion: Champion,
    features: list[Path],
    calendar: DemoDays,
    submissions: list[Submission],
) -> dict[str, Any] | None:
    """Steps 7 to 9: govern and schedule the champion, materialise the next day, score it."""
    with clock.step(
        "7. governance: the failed fairness gate blocks approval; an override is recorded", "govern"
    ):
        if not govern(console, client, champion) or not wait_for_deployment(console, bootstrap, champion):
            return None
    title = f"8. the next day's data arrives: materialise {calendar.next_day}"
    with clock.step(title, "next day"):
        next_day = DemoDays(calendar.next_day, 1)
        arrived = _submit_all(console, client, [p for p in features if _kind(p) == "FeatureSet"], next_day)
        submissions += arrived
        _find_events(console, bootstrap, arrived)
        if not arrived or not _follow_materialisations(console, client, arrived):
            return None
    title = f"9. the scheduler takes {champion.name} v{champion.version} live and scores {calendar.next_day}"
    with clock.step(title, "scoring"):
        scored = score_next_day(console, client, stack, bootstrap, champion, calendar.next_day)
        if scored is not None:
            print_outcome(console, {"status": "succeeded", "result": scored})  # as `pfactory score` shows it
    return scored


def _where_next(console: Console, gateway_url: str, home: Path, scored: dict[str, Any]) -> None:
    console.rule("where to look next")
    rows = [
        ("API", f"{gateway_url}/docs (OpenAPI; the admin key is in {home}/credentials.json)"),
        ("models", f"{gateway_url}/v1/models   ·   pfactory models list"),
        ("predictions", str(scored.get("predictions_uri"))),
        ("features", f"{home}/features"),
        ("logs", f"{home}/logs"),
        (
            "your own",
            "docs/getting-started.md: copy examples/credit_model.yaml, pfactory validate, pfactory submit",
        ),
    ]
    for label, text in rows:
        console.print(f"  {label:<12} {escape(text)}")


def _train(
    console: Console,
    client: GatewayClient,
    clock: Clock,
    bootstrap: str,
    models: list[Path],
    calendar: DemoDays,
) -> list[Submission]:
    """Submit the model configs now that their features exist, and show their request events."""
    with clock.step("4. submit the model configs (their features exist now)", "submit models"):
        console.print(
            f"[dim]each model trains on the generated history: spec.training.window is set to "
            f"{calendar.start}..{calendar.today} in what is submitted (the example files train on 2024)[/]"
        )
        submitted = _submit_all(console, client, models, calendar)
        _find_events(console, bootstrap, submitted)
    return submitted


def _generate_data(console: Console, examples: Path, out: Path, calendar: DemoDays) -> bool:
    """Write the seeded example credit data where the stack's materialiser reads it (data/raw)."""
    script = examples / "credit" / "generate_data.py"
    spec = importlib.util.spec_from_file_location("pfactory_demo_generate_data", script)
    if spec is None or spec.loader is None or not script.exists():
        console.print(f"[red]error:[/] the data generator {script} is missing")
        return False
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while being defined
    spec.loader.exec_module(module)
    days = calendar.days + 1  # the history, and the next day the scheduler scores
    summary = module.generate(out, calendar.start, days, DEMO_APPLICANTS_PER_DAY, 7, progress=lambda _: None)
    console.print(
        f"[green]generated[/] {days} days of {DEMO_APPLICANTS_PER_DAY:,} applicants a day, {calendar.start} to "
        f"{calendar.next_day}, in {summary.seconds:.1f}s under {out} (ground truth and injected bias: "
        f"{out}/ground_truth.json)"
    )
    return True


def _follow_materialisations(console: Console, client: GatewayClient, submissions: list[Submission]) -> bool:
    """Follow each feature-set job to its end with its progress; True when every one succeeded."""
    jobs = [s.job for s in submissions if s.job and s.job.get("kind") == "materialise"]
    if not jobs:
        return True
    ok = True
    for accepted in jobs:
        with JobBars(console, "days") as bars:
            job = _follow_materialisation(console, client, accepted, bars)
        if job is None:
            return False
        if job["status"] != "succeeded":
            console.print(f"[red]failed[/] job {job['job_id']}: {escape(str(job.get('reason')))}")
            ok = False
    return ok


def _follow_materialisation(
    console: Console, client: GatewayClient, accepted: dict[str, Any], bars: JobBars
) -> dict[str, Any] | None:
    """One job's view at its end, printing a line whenever its progress changes (None: timed out)."""
    job_id, shown, deadline = str(accepted["job_id"]), "", time.monotonic() + 600
    while True:
        job = client.get_job(job_id)
        bars.update(job_id, str(accepted.get("name")), job)
        progress = job.get("progress") or {}
        line = f"{job['status']} {progress.get('done', 0)}/{progress.get('total', '?')} days"
        if progress.get("message"):
            line += f" — {progress['message']}"
        if line != shown:
            console.print(f"[dim]•[/] {escape(str(accepted.get('name')))}: {escape(line)}")
            shown = line
        if job["status"] in TERMINAL:
            return job
        if time.monotonic() > deadline:
            console.print(f"[red]timed out[/] waiting for job {job_id}")
            return None
        time.sleep(0.5)


def _stop_stack(console: Console, stack: Stack) -> None:
    console.print("stopping the stack…")
    stack.stop()


def training_window(text: str, start: date, end: date) -> str:
    """A model config's YAML with ``spec.training.window`` set to ``start``..``end`` (text unchanged if absent)."""
    return _WINDOW.sub(
        lambda m: f"{m.group(1)}{start.isoformat()}{m.group(3)}{end.isoformat()}", text, count=1
    )


def _submit_all(
    console: Console, client: GatewayClient, configs: list[Path], calendar: DemoDays
) -> list[Submission]:
    submissions = []
    for path in configs:
        submission = Submission(path)
        submissions.append(submission)
        try:
            text = path.read_text(encoding="utf-8")
            window: dict[str, str] = {}
            kind = _kind(path)
            if kind == "FeatureSet":  # backfill the calendar's days
                window = {"start_ds": calendar.start.isoformat(), "end_ds": calendar.today.isoformat()}
            elif kind == "Model":
                text = training_window(text, calendar.start, calendar.today)
            submission.job = client.submit(text, str(path), **window)
        except ConfigRejected as rejected:
            console.print(f"[red]refused[/] {escape(str(path))}: {escape(rejected.summary)}")
            print_issues(console, rejected.issues, filename=str(path))
            continue
        except GatewayError as error:
            console.print(f"[red]error[/] {escape(str(path))}: {escape(str(error))}")
            continue
        job = submission.job
        console.print(
            f"[green]accepted[/] {escape(str(path))} → {job['kind']} job [bold]{job['job_id']}[/] "
            f"({escape(str(job.get('name', '')))}) at {escape(str(job.get('location', '')))}"
        )
    return submissions


def _find_events(console: Console, bootstrap: str, submissions: list[Submission]) -> None:
    by_topic: dict[str, list[Submission]] = {}
    for submission in submissions:
        if submission.job:
            topic = REQUEST_TOPICS.get(str(submission.job.get("kind")))
            if topic:
                by_topic.setdefault(topic, []).append(submission)
    for topic, group in by_topic.items():
        seen = asyncio.run(find_job_events(bootstrap, topic, [str(s.job["job_id"]) for s in group if s.job]))
        for submission in group:
            assert submission.job is not None
            job_id = str(submission.job["job_id"])
            submission.seen = seen.get(job_id)
            if submission.seen is None:
                console.print(f"[red]not seen[/]  job {job_id}: no request event on {topic}", soft_wrap=True)
                continue
            console.print(
                f"[green]seen[/]  job {job_id}: {escape(submission.seen.describe())}", soft_wrap=True
            )


def _show_states(console: Console, client: GatewayClient, submissions: list[Submission], home: Path) -> None:
    console.rule("job states, as the workers report them")
    job_ids = [str(s.job["job_id"]) for s in submissions if s.job]
    jobs: list[dict[str, Any]] = []
    deadline = time.monotonic() + 30
    while job_ids:
        try:
            jobs = [client.get_job(job_id) for job_id in job_ids]
        except GatewayError as error:
            console.print(f"[red]error[/] {escape(str(error))}")
            return
        if all(job.get("status") in TERMINAL for job in jobs) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    if jobs:
        print_jobs(console, jobs)
    if any(job.get("status") == "failed" for job in jobs):
        console.print(
            f"[dim]a failed job's reason says what went wrong and how to fix it; the workers' logs are "
            f"under {home}/logs ([bold]pfactory jobs show <job>[/] shows one whole).[/]"
        )
