"""Entry points that run outside the Dagster process and report back to it through Dagster Pipes."""
