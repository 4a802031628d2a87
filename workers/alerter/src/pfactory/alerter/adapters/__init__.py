"""The alert router's adapters: one module per external system (PagerDuty, Datadog, the SQLite state)."""
