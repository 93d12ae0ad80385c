"""Dagster-free logic: every function here takes plain data and returns plain data (docs/architecture.md, "Layers")."""
