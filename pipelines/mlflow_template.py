"""A new sweep's MLflow SQLite file, copied from an empty one made once per MLflow version.

MLflow builds a new SQLite store by running its whole migration history (2-3 s on 2 idle cores, 7 s on
a loaded one): the largest single item of a sweep's start-up. The result is the same empty schema
every time, so it is made once, kept in the user's cache (``$XDG_CACHE_HOME/prunetune``, else
``~/.cache/prunetune``), and copied. MLflow checks the schema's revision when it opens the file, and the
cache is named by MLflow's version, so a copy is never older than the library reading it. Where the
cache cannot be written, MLflow creates the file itself as before.
"""
from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
from pathlib import Path


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "prunetune"


def template(directory: Path | None = None) -> Path | None:
    """The migrated empty database of this MLflow version in ``directory`` (the cache), made once; None
    where it cannot be written."""
    import mlflow
    from mlflow.tracking import MlflowClient

    directory = directory or cache_dir()
    path = directory / f"mlflow-{mlflow.__version__}.db"
    if path.is_file():
        return path
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=directory) as tmp:
            fresh = Path(tmp) / "mlflow.db"
            MlflowClient(tracking_uri=f"sqlite:///{fresh}").search_experiments()  # runs the migrations
            os.replace(fresh, path)  # atomic: a concurrent sweep sees the whole file or none
    except (OSError, RuntimeError):  # a read-only or missing home: MLflow creates the file itself
        return None
    return path


def new_sqlite_store(tracking_uri: str, out_dir: Path) -> bool:
    """Create ``tracking_uri``'s SQLite file from the template if it does not exist yet; True if copied.

    The template's ``Default`` experiment points at the template's own directory; the copy's is set to
    the sweep's ``mlartifacts/0`` so no record names a path outside the sweep."""
    if not tracking_uri.startswith("sqlite:///"):
        return False
    target = Path(tracking_uri.removeprefix("sqlite:///"))
    if target.exists():
        return False
    template_file = template()
    if template_file is None:
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    shutil.copyfile(template_file, partial)
    with sqlite3.connect(partial) as db:
        db.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0",
                   (str(out_dir.resolve() / "mlartifacts" / "0"),))
    os.replace(partial, target)
    return True
