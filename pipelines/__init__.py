"""The command line, the sweep on Ray Tune (phases, trials, shared stages), MLflow tracking, result
tables and reports, and the generated docs (config reference, method table, defaults pin)."""
