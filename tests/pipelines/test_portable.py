"""A sweep directory is portable: a copy (or a moved sweep) reports, resumes and serves from its own
files; the original is never read or written; a copy that lacks a recorded file says which and stops."""
import hashlib
import json
import shutil
import sqlite3
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipelines.cli import main
from pipelines.sweep_state import SweepState

CONFIG = """
name: portable
data: {name: digits}
model: {name: mlp, options: {widths: [16]}}
train: {epochs: 1, batch_size: 64}
sweep:
  grid:
    - {prune.method: [random, magnitude], prune.sparsity: [0.5, 0.8]}
"""


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _runs(out: Path) -> list[tuple[str, str, str]]:
    with sqlite3.connect(out / "mlflow.db") as db:
        return db.execute("SELECT r.run_uuid, r.status, r.artifact_uri FROM runs r JOIN experiments e "
                          "ON r.experiment_id = e.experiment_id WHERE e.name = 'portable'").fetchall()


def test_sweep_state_records_its_own_files_relative_to_the_directory(tmp_path):
    out = tmp_path / "a"
    out.mkdir()
    state = SweepState(name="s", config_hash="h", tracking_uri=f"sqlite:///{out}/mlflow.db", experiment_id="1",
                       parent_run_id="p", store_uri=str(out / "store"), study_path=str(out / "optuna.db"),
                       study_name="s")
    state.save(out)
    record = json.loads((out / "sweep.json").read_text())
    assert (record["tracking_uri"], record["store_uri"], record["study_path"]) == \
        ("sqlite:///./mlflow.db", "./store", "./optuna.db")
    shutil.copytree(out, tmp_path / "b")
    copy = SweepState.load(tmp_path / "b")
    assert copy.store_uri == str(tmp_path / "b" / "store") and copy.tracking_uri == f"sqlite:///{tmp_path}/b/mlflow.db"
    assert copy.moved_from(tmp_path / "b") == out and copy.moved_from(out) is None
    shared = SweepState(**{**state.__dict__, "store_uri": "/shared/store", "tracking_uri": "http://127.0.0.1:5000"})
    shared.save(out)
    assert json.loads((out / "sweep.json").read_text())["store_uri"] == "/shared/store"  # outside: as given
    assert SweepState.load(out).tracking_uri == "http://127.0.0.1:5000"


@pytest.mark.slow
def test_copies_of_a_finished_and_an_unfinished_sweep_never_touch_the_originals(tmp_path, capsys):
    config = tmp_path / "sweep.yaml"
    config.write_text(CONFIG)
    finished, unfinished = tmp_path / "finished", tmp_path / "unfinished"
    assert main(["run", str(config), "--out", str(finished), "--quiet"]) == 0
    shutil.copytree(finished, unfinished, symlinks=True)
    # The same sweep as if stopped before its last trial ended: its record keeps the run id, loses the row.
    sweep_json = unfinished / "sweep.json"
    sweep_json.write_text(json.dumps({**json.loads(sweep_json.read_text()), "status": "interrupted"}))
    record_path = unfinished / "trials" / "grid-3.json"
    record = json.loads(record_path.read_text())
    del record["row"]
    record_path.write_text(json.dumps(record))
    (unfinished / "results.parquet").unlink()
    capsys.readouterr()

    originals = {d: _digest(d) for d in (finished, unfinished)}
    copies = {d: tmp_path / f"copy-of-{d.name}" for d in originals}
    for original, copy in copies.items():
        shutil.copytree(original, copy, symlinks=True)
    away = {d: d.with_name(d.name + "-away") for d in originals}

    for step in ("originals moved away", "originals present"):
        if step == "originals moved away":
            for d, gone in away.items():
                d.rename(gone)
        else:
            for d, gone in away.items():
                assert not d.exists(), sorted(str(p) for p in d.rglob("*"))
                gone.rename(d)
        for copy in copies.values():
            assert main(["resume", str(copy), "--quiet"]) == 0, (step, capsys.readouterr().err)
            assert main(["report", str(copy)]) == 0, step
            assert main(["store", str(copy)]) == 0, step
            printed = capsys.readouterr().out
            assert "accuracy_vs_density.png" in printed and "stage runs" in printed
        for original, copy in copies.items():
            rows = pq.read_table(copy / "results.parquet").to_pylist()
            assert len(rows) == 4 and all(r["status"] == "ok" for r in rows), step
            runs = _runs(copy)
            assert len(runs) == 1 + 4, runs  # one parent, one child per row: the copy's own records
            assert all(uri.startswith((copy / "mlartifacts").as_uri()) for _, _, uri in runs), runs
            assert all(status == "FINISHED" for _, status, _ in runs)
            assert json.loads((copy / "sweep.json").read_text())["store_uri"] == "./store"
    # the resumed trial's artifacts went to the copy
    assert list((copies[unfinished] / "mlartifacts").rglob("model.pt"))
    for original, digest in originals.items():
        assert _digest(original) == digest, f"{original} changed"


def test_a_copy_without_its_mlflow_store_says_so_and_creates_nothing(tmp_path, capsys):
    out = tmp_path / "sweep"
    out.mkdir()
    (out / "config.yaml").write_text(CONFIG)
    SweepState(name="portable", config_hash="h", tracking_uri=f"sqlite:///{out}/mlflow.db", experiment_id="1",
               parent_run_id="p", store_uri=str(out / "store"), study_path=str(out / "optuna.db"),
               study_name="portable", status="interrupted").save(out)
    assert main(["resume", str(out)]) == 2
    err = capsys.readouterr().err
    assert "mlflow.db" in err and "gone" in err
    assert not (out / "mlflow.db").exists()
    assert main(["ui", str(out)]) == 2
    assert "mlflow.db" in capsys.readouterr().err and not (out / "mlflow.db").exists()
