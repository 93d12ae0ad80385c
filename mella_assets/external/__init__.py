"""Scripts that run outside the Dagster process (launched through Dagster Pipes); they never import dagster."""
