"""The pfactory command line: up, validate, submit, jobs, schema export."""
