"""The sweep's result table: one row per trial, Parquet via pyarrow, and a terminal rendering."""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pruning.columns import EVALUATE_COLUMNS, EXPORT_COLUMNS
from training.columns import Column

_SEARCH = "the stages that found the mask (pre-training, IMP levels, scores, small set)"
_SHARED = "stages several trials of this sweep used (a pre-training, IMP levels, a small set)"

IDENTITY_COLUMNS = (
    Column("trial_id", "str", "Ray Tune's trial id", required=True),
    Column("phase", "str", "grid or optuna", required=True),
    Column("slot", "str", "the trial's slot in the sweep (grid-3, optuna-0): its log, record and retry name"),
    Column("method", "str", "the pruning method", required=True),
    Column("target_sparsity", "float", "prune.sparsity: the fraction of prunable weights to remove", required=True),
    Column("seed", "int", "the trial's seed (data split, init, sampling)", required=True, metric=False),
)
TRIAL_COLUMNS = (
    Column("near_collapsed_layers", "str", "layers keeping under 0.1 of the mask's overall density"),
    Column("levels", "int", "IMP levels the trial trained (its retrain included)"),
    Column("search_wall_time_s", "float", f"seconds of {_SEARCH}, as if found alone"),
    Column("search_sample_passes", "int", f"sample passes (examples through forward and backward) of {_SEARCH}"),
    Column("search_own_wall_time_s", "float", "search seconds of the stages only this trial used"),
    Column("search_own_sample_passes", "int", "search sample passes of the stages only this trial used"),
    Column("search_amortized_wall_time_s", "float", f"search seconds with {_SHARED} split among those trials"),
    Column("search_amortized_sample_passes", "float", f"search sample passes with {_SHARED} split among them"),
    Column("search_stage_costs", "json", "each search stage (stage/key) -> [seconds, sample passes]"),
    Column("retrain_wall_time_s", "float", "seconds of the final training of the sparse network"),
    Column("retrain_sample_passes", "int", "its sample passes"),
    Column("small_set_hash", "str", "content hash of the distilled set or subset the method trained on"),
    Column("small_set_method", "str", "how that set was made (dm, dc, mtt, random, herding, ...)"),
    Column("small_set_size", "int", "its examples"),
    Column("distill_wall_time_s", "float", "seconds to make the set"),
    Column("distill_sample_passes", "int", "sample passes to make the set"),
    Column("distill_shared_by", "int", "trials of this sweep that used the set"),
    Column("distill_amortized_wall_time_s", "float", "distill_wall_time_s over distill_shared_by"),
    Column("distill_amortized_sample_passes", "float", "distill_sample_passes over distill_shared_by"),
)
RUN_COLUMNS = (
    Column("status", "str", "ok or error", required=True),
    Column("error", "str", "the failed trial's error (its traceback is an MLflow artifact)", required=True),
    Column("wall_time_s", "float", "seconds the trial took (stored stages it reused cost nothing here)",
           required=True),
    Column("mlflow_run_id", "str", "the trial's MLflow run", required=True),
    Column("trial_key", "str", "the key of the trial's evaluation: equal keys, equal results"),
    Column("stage_refs", "json", "where the report finds the trial's stages in the store, by role"),
    Column("cached", "bool", "the evaluation was already in the store"),
    Column("overrides", "json", "the settings this trial set (grid axes, searched parameters)"),
    Column("started_at", "float", "start, Unix seconds (an ISO tag on the MLflow run)", metric=False),
    Column("ended_at", "float", "end, Unix seconds", metric=False),
)
COLUMNS: tuple[Column, ...] = (*IDENTITY_COLUMNS, *EVALUATE_COLUMNS, *TRIAL_COLUMNS, *EXPORT_COLUMNS, *RUN_COLUMNS)
BY_NAME = {c.name: c for c in COLUMNS}
NAMES = [c.name for c in COLUMNS]
OBJECTIVE_COLUMNS = [c.name for c in COLUMNS if c.objective]
NOT_METRICS = frozenset(c.name for c in COLUMNS if not c.metric)


def error_values() -> dict[str, float]:
    """What a failed trial reports for every objective: NaN, so a search sees a failure, not a zero."""
    return {name: math.nan for name in OBJECTIVE_COLUMNS}


def amortize_shared_costs(rows: list[dict[str, Any]]) -> None:
    """Split each stage several trials of this sweep used (a shared pre-training, IMP levels shared by
    every target, a small set) among those trials: ``search_own_*`` counts the stages only this trial
    needed, ``search_amortized_*`` adds its share of the shared ones. ``search_*`` stays the ticket's
    whole cost, as if found alone."""
    users: dict[str, int] = {}
    for r in rows:
        for key in _stage_costs(r):
            users[key] = users.get(key, 0) + 1
        if r.get("small_set_hash"):
            users["small_set/" + r["small_set_hash"]] = users.get("small_set/" + r["small_set_hash"], 0) + 1
    for r in rows:
        costs = _stage_costs(r)
        if costs:
            for i, unit in enumerate(("wall_time_s", "sample_passes")):
                r[f"search_own_{unit}"] = sum(c[i] for k, c in costs.items() if users[k] == 1)
                r[f"search_amortized_{unit}"] = sum(c[i] / users[k] for k, c in costs.items())
        h = r.get("small_set_hash")
        if h:
            shared_by = users["small_set/" + h]
            r["distill_shared_by"] = shared_by
            r["distill_amortized_wall_time_s"] = r["distill_wall_time_s"] / shared_by
            r["distill_amortized_sample_passes"] = r["distill_sample_passes"] / shared_by


def _stage_costs(row: dict[str, Any]) -> dict[str, list[float]]:
    return json.loads(row["search_stage_costs"]) if row.get("search_stage_costs") else {}


def finite(v: Any) -> float | None:
    """A row value as a float when it is a finite number (not a bool, None or NaN), else None."""
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def _clean(v: Any) -> Any:
    if isinstance(v, float) and math.isnan(v):
        return None
    return v


SHOWN_AS = {"prune.method": "method", "prune.sparsity": "target_sparsity", "seed": "seed"}  # axes with a column


def swept_settings(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """One column per swept setting (every grid axis and search parameter, named by its dotted path),
    so rows that differ only in, say, ``train.lr`` can be told apart. Values of mixed kinds become
    their JSON text (one Parquet type per column)."""
    per_row = [json.loads(r["overrides"]) if r.get("overrides") else {} for r in rows]
    axes = sorted({a for o in per_row for a in o} - set(NAMES))
    columns = {}
    for axis in axes:
        values = [o.get(axis) for o in per_row]
        kinds = {type(v) for v in values if v is not None}
        if kinds <= {int, float} and kinds != {int, float}:
            columns[axis] = values
        elif kinds == {int, float}:
            columns[axis] = [None if v is None else float(v) for v in values]
        elif kinds <= {str} or kinds <= {bool}:
            columns[axis] = values
        else:
            columns[axis] = [None if v is None else json.dumps(v) for v in values]
    return columns


_ARROW_TYPES = {"float": pa.float64(), "int": pa.int64(), "bool": pa.bool_(), "str": pa.string(), "json": pa.string()}


def _column(column: Column, values: list[Any]) -> pa.Array | list[Any]:
    """A column no row filled (a sweep without export, or only failed trials) still gets its declared
    type, so every results file of every sweep reads with one schema; filled ones keep what Arrow infers."""
    if all(v is None for v in values):
        return pa.array(values, type=_ARROW_TYPES[column.type])
    return values


def to_table(rows: list[dict[str, Any]], extra_columns: bool = False) -> pa.Table:
    """The fixed columns, the swept settings, and with ``extra_columns`` any other key the rows carry."""
    columns = NAMES
    data = {c: _column(BY_NAME[c], [_clean(r.get(c)) for r in rows]) for c in columns}
    more = {}
    if extra_columns:
        for key in sorted({k for r in rows for k in r} - set(columns)):
            more[key] = [_clean(r.get(key)) for r in rows]
    return pa.table({**data, **swept_settings(rows), **more})


def write_results(rows: list[dict[str, Any]], path: Path, extra_columns: bool = False) -> Path:
    return write_table(to_table(rows, extra_columns), path)


def write_table(table: pa.Table | list[dict[str, Any]], path: Path) -> Path:
    """Atomic: a reader never sees a half-written table."""
    if not isinstance(table, pa.Table):
        table = pa.Table.from_pylist([{k: _clean(v) for k, v in r.items()} for r in table])
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".parquet")
    os.close(fd)
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def read_rows(path: Path) -> list[dict[str, Any]]:
    """A results table's rows; a file that is not one is named (ValueError), not an Arrow traceback."""
    try:
        return pq.read_table(path).to_pylist()
    except (pa.ArrowException, OSError) as exc:
        raise ValueError(f"{path} is not a readable results table ({type(exc).__name__}: {exc}); "
                         "re-create it with `prunetune resume` on the sweep") from None


def copy_to_uri(path: Path, uri: str) -> str:
    """Copy a finished table to shared storage through ``pyarrow.fs`` (``s3://``, ``gs://``, ``hdfs://``,
    ``file://`` or a plain path): on a cluster every node and the analysis notebook read the same file."""
    import pyarrow.fs as pafs

    fs, dest = pafs.FileSystem.from_uri(uri if "://" in uri else Path(uri).resolve().as_uri())
    parent = dest.rsplit("/", 1)[0]
    if parent:
        fs.create_dir(parent, recursive=True)
    tmp = f"{dest}.tmp"
    with path.open("rb") as src, fs.open_output_stream(tmp) as out:
        out.write(src.read())
    fs.move(tmp, dest)
    return uri


def render(rows: list[dict[str, Any]]) -> str:
    cols = [("phase", "phase"), ("method", "method"), ("target_sparsity", "target"),
            ("achieved_sparsity", "achieved"), ("seed", "seed")]
    swept = {a: v for a, v in swept_settings(rows).items() if a not in SHOWN_AS}
    cols += [(a, a) for a in swept]
    cols += [("val_accuracy", "val_acc"), ("test_accuracy", "test_acc"), ("status", "status"), ("wall_time_s", "time_s")]
    rows = [{**r, **{a: v[i] for a, v in swept.items()}} for i, r in enumerate(rows)]

    def fmt(v: Any) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "-"
        if isinstance(v, float):
            return f"{v:.4f}" if abs(v) >= 1e-3 or v == 0 else f"{v:.3g}"
        text = str(v)
        return text if len(text) <= 40 else text[:37] + "..."  # a per-layer mapping: whole in results.parquet

    def sortable(v: Any) -> tuple:
        return (0, v, "") if isinstance(v, (int, float)) and not isinstance(v, bool) else (1, 0, str(v))

    def order(r: dict[str, Any]) -> tuple:
        return (str(r.get("phase")), str(r.get("method")), r.get("target_sparsity") or 0.0, r.get("seed") or 0,
                *(sortable(r.get(a)) for a in swept))

    ordered = sorted(rows, key=order)
    table = [[h for _, h in cols]] + [[fmt(r.get(k)) for k, _ in cols] for r in ordered]
    widths = [max(len(row[i]) for row in table) for i in range(len(cols))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths)) for row in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines + error_lines(rows))


def error_lines(rows: list[dict[str, Any]]) -> list[str]:
    return [f"trial {r.get('trial_id')} ({r.get('method')}): {r.get('error')}" for r in rows
            if r.get("status") == "error"]
