"""The alert router: alert events to PagerDuty incidents and Datadog events."""
