"""What a trial or stage would reject is refused before Ray starts: exit 2, the field and the sweep
point named, nothing written (issue: the classes that used to fail only inside a trial)."""
import socket
from pathlib import Path

import pytest
import ray

from pipelines.cli import main
from pipelines.results import render, to_table
from tests.pipelines.tiny_config import TINY

BASE = TINY


def _refused(tmp_path, capsys, text, *fragments, out=None):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    out = out or tmp_path / "out"
    assert main(["run", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    for fragment in fragments:
        assert fragment in err, err
    assert "Traceback" not in err
    assert not out.exists() and not ray.is_initialized()
    return err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("text, fragments", [
    # digits: 1294 training examples at batch 64 -> 21 iterations per epoch
    (BASE.replace("method: magnitude", "method: imp, rewind_step: 500"),
     ["prune.rewind_step=500 is beyond training", "allowed 0..21"]),
    (BASE.replace("method: magnitude", "method: imp") + "sweep: {grid: {prune.rewind_step: [0, 5, 40]}}\n",
     ["sweep.grid point 2", "prune.rewind_step=40"]),
    (BASE.replace("sparsity: 0.5", "sparsity: 0.5, ignore: [layers.9.weight]"),
     ["prune.ignore names ['layers.9.weight']", "layers.0.weight"]),
    (BASE.replace("method: magnitude", "method: random, allocation: explicit, layer_densities: {x.weight: 0.5}"),
     ["prune.allocation 'explicit'", "x.weight"]),
    (BASE.replace("method: magnitude", "method: snip, examples_per_class: 500"),
     ["prune.examples_per_class=500", "training examples"]),
    (BASE.replace("method: magnitude", "method: distilled_imp, distill: {method: random, ipc: 400}"),
     ["ipc=400", "prune.distill.ipc"]),
    (BASE.replace("name: mlp, options: {widths: [16]}", "name: conv1d"), ["conv1d expects input_shape (C, L)"]),
    (BASE.replace("name: digits", "name: mnist1d, num_samples: 8"), ["data.num_samples=8", "at least 10"]),
    (BASE.replace("name: digits", "name: cifar10, root: /nonexistent/cifar"), ["data.root", "/nonexistent/cifar"]),
    (BASE.replace("name: digits", "name: digits, val_fraction: 0")
     + "sweep: {optuna: {space: {prune.sparsity: {type: float, low: 0.3, high: 0.6}}}}\n",
     ["sweep.optuna.objectives: val_accuracy needs a validation split", "data.val_fraction"]),
    (BASE + "sweep: {optuna: {space: {prune.rewind_step: {type: int, low: 0, high: 4, log: true}}}}\n",
     ["sweep.optuna.space.prune.rewind_step", "low >= 1"]),
    (BASE + "sweep: {optuna: {space: {train.lr: {type: float, low: 0.01, high: 0.1, log: true, step: 0.01}}}}\n",
     ["sweep.optuna.space.train.lr", "cannot have a step"]),
    (BASE + "sweep: {optuna: {fixed: {prune.method: imp}, space: {prune.rewind_step: {type: int, low: 0, high: 99}}}}\n",
     ["sweep.optuna.space.prune.rewind_step=99", "beyond training"]),
])
def test_what_a_trial_would_reject_is_refused_up_front(tmp_path, capsys, text, fragments):
    _refused(tmp_path, capsys, text, *fragments)


def test_an_unreachable_tracking_server_is_refused_within_seconds(tmp_path, capsys):
    uri = f"http://127.0.0.1:{_free_port()}"
    _refused(tmp_path, capsys, BASE + f"tracking: {{tracking_uri: '{uri}'}}\n", "tracking.tracking_uri", "no server answers")


def test_an_unwritable_output_directory_is_refused(tmp_path, capsys):
    (tmp_path / "blocker").write_text("a file where a directory would go")
    _refused(tmp_path, capsys, BASE, "is not a directory", out=tmp_path / "blocker" / "out")
    # /proc refuses new files even to root, for whom a chmod'ed directory stays writable
    _refused(tmp_path, capsys, BASE, "--out /proc/prunetune-out: cannot write in /proc",
             out=Path("/proc/prunetune-out"))


def test_swept_settings_are_columns_of_the_table_and_the_printout():
    rows = [{"phase": "grid", "method": "magnitude", "target_sparsity": 0.5, "seed": 0, "status": "ok",
             "overrides": f'{{"prune.method": "magnitude", "train.lr": {lr}}}'} for lr in (0.1, 0.01)]
    table = to_table(rows)
    assert table.column("train.lr").to_pylist() == [0.1, 0.01]
    printed = render(rows).splitlines()
    assert "train.lr" in printed[0]
    assert printed[2].split()[-5] == "0.0100" and printed[3].split()[-5] == "0.1000"  # told apart, in order


def _cfg(extra: str):
    import yaml

    from pipelines.config import validate

    return validate(yaml.safe_load(BASE + extra))


def test_an_autoscaling_cluster_is_given_its_wait_then_refused_with_both_numbers():
    from pipelines.config import ConfigError
    from pipelines.runner import check_cluster

    said = []
    offers = iter([{"CPU": 2.0}, {"CPU": 2.0}, {"CPU": 8.0}])  # the autoscaler adds a node on the third look
    check_cluster(_cfg("resources: {cpu: 4}\nray: {resource_wait_s: 30}\n"), lambda: next(offers), said.append,
                  poll_s=0.01)
    assert len(said) == 1 and "ray.resource_wait_s" in said[0] and "4 CPUs" in said[0]

    with pytest.raises(ConfigError, match=r"ask for 1 GPU .* has 0.*after waiting 0.05 s"):
        check_cluster(_cfg("resources: {gpu: 1}\nray: {resource_wait_s: 0.05}\n"), lambda: {"CPU": 2.0},
                      said.append, poll_s=0.01)
    with pytest.raises(ConfigError, match=r"ask for 4 CPUs .* has 2; lower resources.cpu or raise ray.num_cpus$"):
        check_cluster(_cfg("resources: {cpu: 4}\n"), lambda: {"CPU": 2.0}, said.append)  # no wait: at once


def test_a_directory_holding_another_configs_finished_sweep_is_left_alone(tmp_path, capsys):
    import json

    from pipelines.sweep_state import SweepState

    out = tmp_path / "out"
    out.mkdir()
    SweepState(name="t", config_hash="0" * 16, tracking_uri="sqlite:///x", experiment_id="1", parent_run_id="p",
               store_uri=str(out / "store"), study_path="s", study_name="t", status="finished").save(out)
    before = (out / "sweep.json").read_text()
    path = tmp_path / "c.yaml"
    path.write_text(BASE)
    assert main(["run", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "holds the finished sweep 't' of another config" in err
    assert (out / "sweep.json").read_text() == before and sorted(p.name for p in out.iterdir()) == ["sweep.json"]
    assert json.loads(before)["status"] == "finished"


def test_px_on_a_model_with_activations_it_cannot_gate_is_refused_up_front(tmp_path, capsys):
    text = BASE.replace("name: mlp, options: {widths: [16]}", "name: vit, options: {patch_size: 2, dim: 16, heads: 4}")
    _refused(tmp_path, capsys, text.replace("method: magnitude", "method: px"), "applies GELU")


@pytest.mark.parametrize("extra, fragment", [
    ("fixed: {prune.method: imp}, ", "per-layer densities apply to pruning-at-init methods"),
    ("", "the search also varies ['data.max_train_samples']"),
])
def test_a_per_layer_density_search_that_cannot_work_is_refused(tmp_path, capsys, extra, fragment):
    text = BASE + ("sweep: {optuna: {" + extra + "layer_densities: {type: float, low: 0.1, high: 1.0}, space: {"
                   + ("train.lr: {type: float, low: 0.01, high: 0.1}" if extra else
                      "data.max_train_samples: {type: int, low: 200, high: 400}") + "}}}\n")
    _refused(tmp_path, capsys, text, fragment)


def test_a_study_left_by_a_driver_killed_mid_write_is_rolled_back_not_refused(tmp_path):
    """A driver SIGKILLed while Optuna writes leaves a hot journal; SQLite refuses a read-only reader
    until it is rolled back (SQLITE_READONLY_ROLLBACK). That is not damage: the check rolls it back to
    the last commit and passes, so the resume can go on."""
    import sqlite3
    import subprocess
    import sys

    from pipelines.preflight import check_study_file

    path = tmp_path / "optuna.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE trials (number INTEGER)")
        db.execute("INSERT INTO trials VALUES (0)")
    killed_mid_write = ("import os, sqlite3, sys\n"
                        "db = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
                        "db.execute('PRAGMA cache_size=1')\n"  # pages spill to the file before the commit
                        "db.execute('BEGIN')\n"
                        "for i in range(20000): db.execute('INSERT INTO trials VALUES (?)', (i + 1,))\n"
                        "os._exit(0)\n")
    subprocess.run([sys.executable, "-c", killed_mid_write, str(path)], check=True)
    assert (tmp_path / "optuna.db-journal").exists()
    with pytest.raises(sqlite3.OperationalError, match="readonly"):  # what the check met before
        with sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True) as db:
            db.execute("SELECT count(*) FROM trials").fetchone()

    check_study_file(path)
    with sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True) as db:
        assert db.execute("SELECT number FROM trials").fetchall() == [(0,)]  # the last commit, intact
