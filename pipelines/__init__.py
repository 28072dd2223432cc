"""The command line, the sweep on Ray Tune (phases, trials, shared stages), MLflow tracking, the results
schema, tables and reports, and the generated docs and checks (config reference, method and result-column
tables, defaults pin, import layering)."""
