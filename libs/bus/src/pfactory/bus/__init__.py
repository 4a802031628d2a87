"""FastStream/aiokafka wiring: at-least-once consumers, retries, dead letters, idempotency, topic admin, embedded Tansu broker."""
