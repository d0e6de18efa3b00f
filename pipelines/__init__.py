"""Wiring: the Dagster Definitions (loaded by workspace.yaml), jobs, and the headless runner."""
