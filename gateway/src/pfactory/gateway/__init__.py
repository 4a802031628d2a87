"""FastAPI gateway: job submission, job status, API keys, outbox relay."""
