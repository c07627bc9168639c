"""The store: all SQL lives in this package (schema, runs, schedules)."""
