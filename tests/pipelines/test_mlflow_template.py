"""A new sweep's MLflow file is a copy of an empty one made once, not a run of every migration."""
import sqlite3

import mlflow.store.db.utils as db_utils
from mlflow.tracking import MlflowClient

from pipelines.mlflow_template import cache_dir, new_sqlite_store
from pipelines.tracking import default_tracking_uri, start_parent


def test_the_second_store_is_copied_and_works_without_any_migration(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    first = tmp_path / "a"
    start_parent(default_tracking_uri(first), "a", first / "mlartifacts", "sweep", {})
    assert list(cache_dir().glob("mlflow-*.db")), "the template was not kept"

    def no_migrations(engine):
        raise AssertionError("the copied store ran MLflow's migrations")

    monkeypatch.setattr(db_utils, "_initialize_tables", no_migrations)
    second = tmp_path / "b"
    target = start_parent(default_tracking_uri(second), "b", second / "mlartifacts", "sweep", {"k": "v"})
    client = MlflowClient(tracking_uri=default_tracking_uri(second))
    assert client.get_run(target.parent_run_id).data.tags["k"] == "v"
    with sqlite3.connect(second / "mlflow.db") as db:  # no record names a path outside the sweep
        assert db.execute("SELECT artifact_location FROM experiments WHERE experiment_id = 0").fetchone()[0] \
            == str(second / "mlartifacts" / "0")


def test_an_existing_store_or_a_server_is_left_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (tmp_path / "mlflow.db").write_bytes(b"mine")
    assert not new_sqlite_store(default_tracking_uri(tmp_path), tmp_path)
    assert (tmp_path / "mlflow.db").read_bytes() == b"mine"
    assert not new_sqlite_store("http://127.0.0.1:5000", tmp_path)
