"""The demo's last act: govern the champion, let the embedded scheduler take it live, score the next day.

The example models fail their fairness gates on purpose (the generated labels carry a bias against
the 18-24 age band), so a plain approval is refused: the demo shows that refusal, then approves with
an admin override whose reason lands in the audit trail, as a credit-risk team accepting a known risk
would. The scheduler publishes the version's deployment (live from the next day at the model's
timezone). The next day's data arrives and is materialised; then the scheduler's clock is moved to
just before the next day's 06:00 (``PF_SCHEDULER_CLOCK_OFFSET_S``) and the scheduler restarted: the
version goes live and the 06:00 firing publishes the day's ``ScoringRequested``. The scorer writes
the predictions and checks drift against the training reference.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from datetime import time as clock_time
from typing import Any
from zoneinfo import ZoneInfo

from rich.console import Console
from rich.markup import escape

from pfactory.bus.reading import SeenEnvelope, read_envelopes
from pfactory.bus.settings import BusSettings
from pfactory.cli.client import GatewayClient, GatewayError
from pfactory.cli.score import start_scoring_run
from pfactory.cli.stack import Stack, StackError
from pfactory.contracts import topics
from pfactory.contracts.events import Envelope

SCHEDULER = "scheduler"
LEAD_S = 15.0
"""How long before the next day's first scoring firing the scheduler's clock is set when restarted."""
OVERRIDE_REASON = (
    "demo: the 18-24 selection-rate gap is a known property of the generated labels; approved to show "
    "scheduling and scoring, not for lending decisions"
)


@dataclass(frozen=True)
class Champion:
    """The registered version the demo takes live."""

    name: str
    version: int
    feature_set: str  # ``name@version``
    cron: str
    zone: ZoneInfo


def first_firing(cron: str, day: date, zone: ZoneInfo) -> datetime:
    """The first ``m h * * *`` firing on ``day`` in ``zone`` (the example schedules are daily)."""
    minute, hour, *rest = cron.split()
    if rest != ["*", "*", "*"] or not (minute.isdigit() and hour.isdigit()):
        raise ValueError(f"the demo follows a daily 'm h * * *' schedule, not {cron!r}")
    return datetime.combine(day, clock_time(int(hour), int(minute)), zone)


def govern(console: Console, client: GatewayClient, champion: Champion) -> bool:
    """Show that a failed gate blocks approval, then approve with a recorded override; True if approved."""
    label = f"{champion.name} v{champion.version}"
    try:
        client.update_status(champion.name, champion.version, "approved", feature_set=champion.feature_set)
        console.print(f"[green]approved[/] {escape(label)}: every gate passed")
        return True
    except GatewayError as refused:
        console.print(f"[yellow]refused[/] plain approval of {escape(label)}: {escape(str(refused))}")
    try:
        changed = client.update_status(
            champion.name,
            champion.version,
            "approved",
            reason=OVERRIDE_REASON,
            override=True,
            feature_set=champion.feature_set,
        )
    except GatewayError as error:
        console.print(f"[red]error[/] approving {escape(label)} with an override: {escape(str(error))}")
        return False
    console.print(
        f"[green]approved[/] {escape(label)} with an admin override; the audit trail keeps the reason: "
        f"[dim]{escape(OVERRIDE_REASON)}[/]"
    )
    return str(changed.get("status")) == "approved"


def wait_for_deployment(
    console: Console, bootstrap: str, champion: Champion, timeout_s: float = 60.0
) -> bool:
    """Wait for the scheduler's ``DeploymentScheduled`` of the champion and print it."""

    def ours(envelope: Envelope) -> bool:
        payload = envelope.payload
        return payload.get("model_name") == champion.name and payload.get("version") == champion.version

    seen = _read(bootstrap, topics.DEPLOYMENT_SCHEDULED, ours, timeout_s)
    if seen is None:
        console.print(
            f"[red]not scheduled[/]: no DeploymentScheduled for {champion.name} within {timeout_s:.0f} s"
        )
        return False
    payload = seen.envelope.payload
    console.print(
        f"[green]scheduled[/] {escape(champion.name)} v{champion.version}: live from {payload.get('live_from')}, "
        f"scored on '{escape(str(payload.get('cron')))}' {escape(str(payload.get('timezone')))} "
        f"({escape(seen.describe())})",
        soft_wrap=True,
    )
    return True


def score_next_day(
    console: Console,
    client: GatewayClient,
    stack: Stack | None,
    bootstrap: str,
    champion: Champion,
    day: date,
    *,
    timeout_s: float = 300.0,
) -> dict[str, Any] | None:
    """Have ``day`` scored: through the embedded scheduler when the demo runs the stack, else on demand.

    Returns:
        The ``ScoringCompleted`` payload, or None (the reason is printed).
    """
    firing = first_firing(champion.cron, day, champion.zone)
    if stack is not None:
        moved = firing - timedelta(seconds=LEAD_S)
        offset = (moved - datetime.now(champion.zone)).total_seconds()
        console.print(
            f"moving the scheduler's clock to {moved:%Y-%m-%d %H:%M:%S} {champion.zone.key} "
            f"(PF_SCHEDULER_CLOCK_OFFSET_S={offset:.0f}) and restarting it: at its next tick {champion.name} "
            f"v{champion.version} goes live, and the {firing:%H:%M} firing scores {day}"
        )
        try:
            stack.restart(SCHEDULER, {"PF_SCHEDULER_CLOCK_OFFSET_S": f"{offset:.3f}"})
        except StackError as error:
            console.print(f"[red]error[/] restarting the scheduler: {escape(str(error))}")
            return None
    else:
        console.print(
            f"[yellow]this stack was not started by the demo[/], so its scheduler's clock stays; scoring {day} "
            "on demand instead (the scheduler does the same at the schedule's time)"
        )
        try:
            start_scoring_run(
                client,
                {
                    "model": champion.name,
                    "version": champion.version,
                    "feature_set": champion.feature_set,
                    "ds": str(day),
                },
            )
        except GatewayError as error:
            console.print(f"[red]error[/] starting the scoring run: {escape(str(error))}")
            return None

    def that_day(envelope: Envelope) -> bool:
        payload = envelope.payload
        return payload.get("model_name") == champion.name and payload.get("ds") == str(day)

    deadline = time.monotonic() + timeout_s
    shown_live = False
    while time.monotonic() < deadline:
        if not shown_live and _status(client, champion) == "live":
            console.print(
                f"[green]live[/] {escape(champion.name)} v{champion.version} (the scheduler took it live)"
            )
            shown_live = True
        done = _read(bootstrap, topics.SCORING_COMPLETED, that_day, 3.0)
        if done is not None:
            console.print(f"[green]scored[/] {day}: {escape(done.describe())}", soft_wrap=True)
            return dict(done.envelope.payload)
        failed = _read(bootstrap, topics.SCORING_FAILED, that_day, 1.0)
        if failed is not None:
            console.print(
                f"[red]scoring failed[/] for {day}: {escape(str(failed.envelope.payload.get('reason')))}"
            )
            return None
    console.print(
        f"[red]timed out[/]: {day} was not scored within {timeout_s:.0f} s (see logs/scheduler.log, logs/scorer.log)"
    )
    return None


def _status(client: GatewayClient, champion: Champion) -> str | None:
    try:
        return str(
            client.get_version(champion.name, champion.version, feature_set=champion.feature_set)["status"]
        )
    except GatewayError:
        return None


def _read(
    bootstrap: str, topic: str, keep: Callable[[Envelope], bool], timeout_s: float
) -> SeenEnvelope | None:
    found = asyncio.run(
        read_envelopes(
            BusSettings(bootstrap_servers=bootstrap), topic, keep=keep, count=1, timeout_s=timeout_s
        )
    )
    return found[0] if found else None
