"""Search spaces for sweeps: grid expansion and Optuna distributions."""
