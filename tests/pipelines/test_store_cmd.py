"""``prunetune store``: lists a store's stage runs; a path that is neither a sweep nor a store, and a stage
name that does not exist, are errors (exit 2), and a reader that leaves early (``| head``) is not."""
from __future__ import annotations

import subprocess
import sys

from pipelines.cli import main
from pipelines.config import trial_config
from pipelines.trial import trial_graph
from training.stage import StageEnv, materialize
from training.store import ArtifactStore


def _store(tmp_path):
    raw = {"data": {"name": "digits"}, "model": {"name": "mlp", "options": {"widths": [8]}},
           "prune": {"method": "random", "sparsity": 0.5}}
    root = tmp_path / "store"
    env = StageEnv.on(ArtifactStore(str(root)), log=lambda *_: None, requested_by="grid-7 random")
    materialize(trial_graph(trial_config(raw, {})).plan.mask, env)
    return root


def test_a_store_lists_its_stage_runs_and_filters_by_stage(tmp_path, capsys):
    root = _store(tmp_path)
    assert main(["store", str(root)]) == 0
    out = capsys.readouterr().out
    assert "pretrain" in out and "mask" in out and "2 stage runs: 2 done" in out
    assert "first needed by" in out and all("grid-7 random" in line for line in out.splitlines()[1:3])
    assert main(["store", str(root), "--stage", "mask"]) == 0
    assert "pretrain " not in capsys.readouterr().out


def test_not_a_store_and_an_unknown_stage_exit_2(tmp_path, capsys):
    assert main(["store", str(tmp_path / "nothing-here")]) == 2
    assert "neither a sweep's output directory" in capsys.readouterr().err
    root = _store(tmp_path)
    assert main(["store", str(root), "--stage", "nonsense"]) == 2
    err = capsys.readouterr().err
    assert "--stage 'nonsense': no such stage" in err and "imp_level" in err


def test_a_reader_that_leaves_early_is_not_an_error(tmp_path):
    root = _store(tmp_path)
    proc = subprocess.run(f"{sys.executable} -m pipelines.cli store {root} | true", shell=True,
                          capture_output=True, text=True)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr
