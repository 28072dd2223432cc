"""``prunetune resume DIR --retry-failed`` / ``--retry SLOT...`` [``--set KEY=VALUE``]: run chosen grid
slots again, under the MLflow run they already have (no second child), optionally with a corrected
setting for those slots only.

A retried slot loses its result row and keeps its run id; the resume then treats it like a slot that
never finished. The correction is kept in the slot's record (``retry_overrides``, applied on top of
its grid point on every later attempt, so a second resume does not undo it) and listed in
``sweep.json`` (``retries``). Search trials are not retried: the Optuna study has recorded them as
FAIL, and a finished study trial cannot be reopened; raise ``sweep.optuna.num_samples`` instead.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .config import (
    ConfigError,
    ExperimentConfig,
    grid_points,
    parse_override,
    trial_config,
)
from .sweep_state import SweepState, TrialRecords


def retry_slots(out_dir: Path, failed: bool, named: list[str]) -> list[str]:
    """The slots to re-run: every grid slot whose row is an error (``failed``), and ``named``."""
    records = TrialRecords(out_dir).all()
    slots = [s for s, r in records.items() if failed and (r.get("row") or {}).get("status") == "error"]
    for slot in named:
        if slot not in records:
            known = ", ".join(sorted(records)) or "none yet"
            raise ConfigError(f"--retry {slot}: no such trial slot in {out_dir}; slots: {known}")
        slots.append(slot)
    search = sorted({s for s in slots if not s.startswith("grid-")})
    if search and (named or not failed):
        raise ConfigError(f"--retry {', '.join(search)}: search trials are not re-run (the Optuna study "
                          "recorded them; a finished study trial cannot be reopened); raise "
                          "sweep.optuna.num_samples to search further")
    return sorted({s for s in slots if s.startswith("grid-")}, key=lambda s: int(s.split("-")[1]))


def mark_for_retry(out_dir: Path, state: SweepState, cfg: ExperimentConfig, raw: dict[str, Any],
                   slots: list[str], sets: list[str]) -> dict[str, Any]:
    """Validate each retried slot's corrected config, then drop its row and record the correction."""
    overrides = dict(parse_override(text) for text in sets)
    points = grid_points(cfg)
    records = TrialRecords(out_dir)
    for slot in slots:
        fixed = {**records.get(slot).get("retry_overrides", {}), **overrides}
        try:
            trial_config(raw, {**points[int(slot.split("-")[1])], **fixed})
        except ConfigError as exc:
            raise ConfigError(f"--retry {slot} with --set {sets}: {exc}") from None
    for slot in slots:
        records.retry(slot, {**records.get(slot).get("retry_overrides", {}), **overrides})
    state.retries.append({"attempt": state.attempts + 1, "slots": slots, "set": overrides})
    state.save(out_dir)
    return overrides


def with_retry_overrides(points: list[dict[str, Any]], records: TrialRecords) -> list[dict[str, Any]]:
    """Each grid point with the corrections its slot was retried with."""
    return [{**p, **records.get(f"grid-{i}").get("retry_overrides", {})} for i, p in enumerate(points)]
