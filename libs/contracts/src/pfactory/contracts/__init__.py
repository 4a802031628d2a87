"""Config kinds, event envelope, events and topic names: pydantic models, no I/O."""
