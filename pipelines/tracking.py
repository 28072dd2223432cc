"""MLflow: one parent run per sweep on the driver, one child run per trial logged from inside it.

Trials log through an explicit ``MlflowClient`` (no global active-run state), so concurrent trials
in one process or many never step on each other, and a resumed trial can re-attach by run id.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .tracking_watch import remote

# The file store raises from MLflow 3.13 on; everything here uses sqlite or a server URI.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def default_tracking_uri(out_dir: Path) -> str:
    return f"sqlite:///{out_dir.resolve()}/mlflow.db"


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def rebase_artifacts(tracking_uri: str, old_dir: Path, new_dir: Path) -> int:
    """Point a copied or moved sweep's own MLflow store at its own artifacts.

    MLflow records absolute ``file://`` artifact locations per experiment and per run; a sweep
    directory copied elsewhere would otherwise log into (and serve from) the original's
    ``mlartifacts``. Only locations under ``old_dir`` change, in the sweep's own sqlite file (a
    tracking server's records are never touched). Returns how many locations moved."""
    import sqlite3

    if not tracking_uri.startswith("sqlite:///"):
        return 0
    old, new = old_dir.resolve().as_uri() + "/", new_dir.resolve().as_uri() + "/"
    moved = 0
    with sqlite3.connect(tracking_uri.removeprefix("sqlite:///")) as db:
        for table, key, column in (("experiments", "experiment_id", "artifact_location"),
                                   ("runs", "run_uuid", "artifact_uri")):
            rows = db.execute(f"SELECT {key}, {column} FROM {table} WHERE substr({column}, 1, ?) = ?",
                              (len(old), old)).fetchall()
            db.executemany(f"UPDATE {table} SET {column} = ? WHERE {key} = ?",
                           [(new + value[len(old):], ident) for ident, value in rows])
            moved += len(rows)
    if moved:
        _forget_artifact_locations()
    return moved


def _forget_artifact_locations() -> None:
    """MLflow caches each run's artifact repository by run id for the life of the process; a copy's
    runs have the original's ids, so a process that logged to the original (a notebook, a test) would
    go on writing there. The cache is private: if it moves, this does nothing (a CLI process never
    saw the original)."""
    try:
        from mlflow.tracking._tracking_service import utils
    except ImportError:
        return
    cache = getattr(utils, "_artifact_repos_cache", None)
    if hasattr(cache, "clear"):
        cache.clear()


@dataclass(frozen=True)
class TrackingTarget:
    """What a trial needs to log under the sweep's parent run; plain strings so it pickles."""

    tracking_uri: str
    experiment_id: str
    parent_run_id: str


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def open_store(target: "TrackingTarget") -> None:
    """Open the tracking store once in this process (MLflow keeps it per URI): for SQLite that is
    SQLAlchemy, alembic and its schema check, about a second, worth overlapping with other start-up."""
    _client(target.tracking_uri).get_experiment(target.experiment_id)


class ArtifactLocationError(ValueError):
    """A tracking server whose experiment keeps artifacts on the local disk of whoever logs them."""


def start_parent(tracking_uri: str, experiment_name: str, artifact_root: Path, run_name: str, tags: dict,
                 description: str = "") -> TrackingTarget:
    """Create the experiment (on the driver, before trials start: no creation races) and the parent run.

    With the embedded SQLite store the artifacts are files under ``artifact_root`` (the sweep's DIR).
    With a tracking server the server chooses: started with ``--artifacts-destination`` (serving
    artifacts, MLflow's default) it hands out ``mlflow-artifacts:`` locations, so every node uploads
    through the server to its bucket. A ``file:`` location there would put each trial's artifacts on
    the disk of the node that ran it, so it is refused."""
    from .mlflow_template import new_sqlite_store

    new_sqlite_store(tracking_uri, artifact_root.parent)
    client = _client(tracking_uri)
    exp = client.get_experiment_by_name(experiment_name)
    if exp is None:
        # Marked as model training, so MLflow's UI opens it on the runs table, not the GenAI traces view.
        where = {} if remote(tracking_uri) else {"artifact_location": artifact_root.resolve().as_uri()}
        exp_id = client.create_experiment(experiment_name, tags={"mlflow.experimentKind": "custom_model_development"},
                                          **where)
        exp = client.get_experiment(exp_id)
    else:
        exp_id = exp.experiment_id
    location = exp.artifact_location or ""
    if remote(tracking_uri) and (location.startswith("file:") or location.startswith("/")):
        raise ArtifactLocationError(
            f"tracking.tracking_uri {tracking_uri}: experiment {experiment_name!r} stores artifacts at {location}, "
            "on the disk of whichever node logs them; start the server with --artifacts-destination "
            "s3://bucket/prefix (and without --no-serve-artifacts), or use another tracking.experiment_name")
    note = {"mlflow.note.content": description} if description else {}  # the run's description in the UI
    run = client.create_run(exp_id, run_name=run_name, tags={"prunetune.role": "sweep", **note, **tags})
    return TrackingTarget(tracking_uri, exp_id, run.info.run_id)


TRIAL_METRIC_COLUMNS = ("test_accuracy", "val_accuracy", "achieved_sparsity")
TRIAL_PARAM_COLUMNS = ("phase", "prune.method", "prune.sparsity", "seed")


def trials_view_key(parent_run_id: str) -> str:
    return f"sweep-{parent_run_id}"


def share_trials_view(tracking_uri: str, experiment_id: str, parent_run_id: str, name: str,
                      swept: list[str] = ()) -> str:
    """Save a view of the runs table that shows this sweep's trials with their columns; returns its key.

    MLflow 3.17's runs table opens on one collapsed parent row with no metric columns, and no URL
    parameter can add columns or expand a parent (seen in headless Chromium). A shared view can: an
    experiment tag ``mlflow.sharedViewState.<key>`` holding the table's state, opened by
    ``#/experiments/<id>/runs?viewStateShareKey=<key>``. It filters to this sweep's trials (flat rows,
    sorted by test accuracy, which keeps MLflow from nesting them under the parent again) and shows
    method, sparsity, seed, every swept setting and the accuracies."""
    import json
    import time

    columns = [*(f"params.`{p}`" for p in dict.fromkeys([*TRIAL_PARAM_COLUMNS, *swept])),
               *(f"metrics.`{m}`" for m in TRIAL_METRIC_COLUMNS)]
    view = {"searchFilter": f"tags.`mlflow.parentRunId` = '{parent_run_id}'",
            "orderByKey": "metrics.`test_accuracy`", "orderByAsc": False,
            "selectedColumns": columns, "columnOrder": ["attributes.`Run Name`", *columns],
            "columnWidths": {"attributes.`Run Name`": 260}}
    now = int(time.time() * 1000)
    key = trials_view_key(parent_run_id)
    _client(tracking_uri).set_experiment_tag(experiment_id, f"mlflow.sharedViewState.{key}", json.dumps(
        {"name": name, "createdAt": now, "updatedAt": now, "state": json.dumps(view)}))
    return key


def finish_run(tracking_uri: str, run_id: str, status: str = "FINISHED") -> None:
    _client(tracking_uri).set_terminated(run_id, status=status)


def reopen_parent(tracking_uri: str, experiment_id: str, run_id: str) -> TrackingTarget:
    _client(tracking_uri).update_run(run_id, status="RUNNING")
    return TrackingTarget(tracking_uri, experiment_id, run_id)


def end_running_children(target: TrackingTarget, status: str = "KILLED") -> int:
    """Runs of trials that a stop cut short: ended, never left RUNNING (a resume re-attaches them)."""
    client = _client(target.tracking_uri)
    runs = client.search_runs(
        [target.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{target.parent_run_id}' and attributes.status = 'RUNNING'",
        max_results=10_000,
    )
    for run in runs:
        client.set_terminated(run.info.run_id, status=status)
    return len(runs)


def trial_runs(target: TrackingTarget) -> dict[str, list[str]]:
    """The sweep's trial runs by slot, oldest first (a resume compares them with the trial records)."""
    runs = _client(target.tracking_uri).search_runs(
        [target.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{target.parent_run_id}' and tags.`prunetune.role` = 'trial'",
        max_results=10_000, order_by=["attributes.start_time ASC"],
    )
    by_slot: dict[str, list[str]] = {}
    for run in runs:
        if "slot" in run.data.tags:
            by_slot.setdefault(run.data.tags["slot"], []).append(run.info.run_id)
    return by_slot


def _shown(v: float) -> float:
    """Integers as they are; fractions to 6 significant digits (the UI prints every digit it gets;
    results.parquet keeps the full values)."""
    return v if v.is_integer() else float(f"{v:.6g}")


class RunLogger:
    """A child (trial) run, or any run by id."""

    def __init__(self, tracking_uri: str, run_id: str) -> None:
        self.client = _client(tracking_uri)
        self.run_id = run_id

    @classmethod
    def child(cls, target: TrackingTarget, run_name: str, tags: dict[str, str]) -> "RunLogger":
        client = _client(target.tracking_uri)
        run = client.create_run(
            target.experiment_id,
            run_name=run_name,
            tags={"mlflow.parentRunId": target.parent_run_id, "prunetune.role": "trial", **tags},
        )
        return cls(target.tracking_uri, run.info.run_id)

    @classmethod
    def reattach(cls, target: TrackingTarget, run_id: str) -> "RunLogger":
        """The run an earlier attempt of this trial created, open again (no second run per trial)."""
        logger = cls(target.tracking_uri, run_id)
        logger.client.update_run(run_id, status="RUNNING")
        if "error" in logger.client.get_run(run_id).data.tags:  # a retried failure: its reason is history
            logger.client.delete_tag(run_id, "error")
        return logger

    def params(self, params: dict[str, Any]) -> None:
        """MLflow params cannot change; a re-attached run retried with a corrected setting keeps the
        first value as the param and records the new one as the tag ``retried.<param>``."""
        from mlflow.entities import Param

        logged = self.client.get_run(self.run_id).data.params
        values = {k: str(v)[:6000] for k, v in flatten(params).items()}
        items = [Param(k, v) for k, v in values.items() if k not in logged]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i : i + 100])
        changed = {f"retried.{k}": v for k, v in values.items() if k in logged and logged[k] != v}
        if changed:
            self.tags(changed)

    def metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [
            Metric(k, _shown(float(v)), now, step or 0)
            for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))
        ]
        if items:
            self.client.log_batch(self.run_id, metrics=items)

    def tags(self, tags: dict[str, Any]) -> None:
        for k, v in tags.items():
            self.client.set_tag(self.run_id, k, str(v))

    def artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def finish(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status=status)
