"""The README's table of result columns, rendered from the results schema (a test fails when it is stale):

    .venv/bin/python -m pipelines.columns_table --write
"""
from __future__ import annotations

import sys

from .readme_block import README, ReadmeBlock

BLOCK = ReadmeBlock("result-columns", "python -m pipelines.columns_table --write")


def _use(column) -> str:
    uses = []
    if column.required:
        uses.append("every row")
    if column.objective:
        uses.append("objective, constraint")
    if column.metric:
        uses.append("MLflow metric")
    if column.needs_export:
        uses.append("with `export.enabled`")
    return ", ".join(uses)


def render() -> str:
    from .results import COLUMNS

    rows = ["| column | type | what | use |", "|---|---|---|---|"]
    rows += [f"| `{c.name}` | {c.type} | {c.meaning.replace('|', chr(92) + '|')} | {_use(c)} |" for c in COLUMNS]
    return "\n".join(rows)


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        BLOCK.write(render(), README)
    else:
        print(render())
