"""An example prunetune plugin: one module per registered thing (see pyproject.toml's entry points)."""
