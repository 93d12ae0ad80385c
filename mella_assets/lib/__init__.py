"""Dagster-free logic: every function here takes plain data and returns plain data (see DESIGN §2)."""
