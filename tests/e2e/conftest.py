"""Fixtures the end-to-end tests share with the alert router's tests (the PagerDuty/Datadog stand-in)."""

from tests.workers.alerter.conftest import receiver, statsd

__all__ = ["receiver", "statsd"]
