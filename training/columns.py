"""What a result column is: its name, type and meaning, and what the pipelines may do with it.

Each layer declares the columns it produces where it produces them (the evaluation and export stages in
``pruning.columns``, the trial's costs and bookkeeping in ``pipelines.results``); the results schema,
the objectives a search accepts, the MLflow metrics, the error row and the README's column table are all
read off these declarations, so a column is named once.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ColumnType = Literal["float", "int", "bool", "str", "json"]


@dataclass(frozen=True)
class Column:
    name: str
    type: ColumnType
    meaning: str
    # Every trial's row has it (failed trials' rows included, as None/NaN where the value is a result).
    required: bool = False
    # Logged as an MLflow metric of the trial's run (numbers that are results, not ids, seeds or times).
    metric: bool = True
    # May be a search objective or constraint (``sweep.optuna.objectives``, ``constraints``).
    objective: bool = False
    # Present only with ``export.enabled`` (the export stage writes it).
    needs_export: bool = False

    def __post_init__(self) -> None:
        if self.type in ("str", "json", "bool"):  # only numbers are metrics; a flag is a tag
            object.__setattr__(self, "metric", False)
