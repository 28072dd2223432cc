"""How every ``prunetune`` command ends on an error: one line on stderr and an exit code that says
whose fault it was (2: the input; 1: the run; 130: stopped). Importable without torch, Ray or MLflow,
so argument errors come back at once."""
from __future__ import annotations

import sys

EXIT_CONFIG = 2  # bad input: a config field, a path, an argument
EXIT_FAILED = 1  # the run failed (a trial, an outage); what was finished is kept
EXIT_STOPPED = 130  # Ctrl-C or SIGTERM


def fail(msg: str, code: int = EXIT_CONFIG) -> int:
    print(f"prunetune: error: {msg}", file=sys.stderr)
    return code
