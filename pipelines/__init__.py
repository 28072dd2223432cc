"""Stages, the Ray Tune runner, MLflow tracking, the CLI and result reports."""
