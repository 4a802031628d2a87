"""The scheduler's adapters: one module per external system (DAG folders and buckets)."""
