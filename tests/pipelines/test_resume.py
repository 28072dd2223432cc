"""A sweep whose driver is SIGKILLed (in the grid phase, then in the Optuna phase) or stopped with
Ctrl-C resumes to exactly
the sweep it would have been: every trial once, nothing finished recomputed, one MLflow parent."""
import collections
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import optuna
import pyarrow.parquet as pq
import pytest
from mlflow.tracking import MlflowClient

from pipelines.cli import main
from tests.processes import kill_groups, session_pids
from training.store import ArtifactStore

CONFIG = textwrap.dedent(
    """
    name: resumable
    seed: 0
    data: {name: digits, val_fraction: 0.15}
    model: {name: mlp, options: {widths: [32]}}
    train: {epochs: 3, batch_size: 128, lr: 0.05}
    prune: {method: imp, sparsity: 0.75}
    ray: {num_cpus: 2}
    sweep:
      max_concurrent_trials: 2
      grid:
        - {prune.method: [random, magnitude, imp], prune.sparsity: [0.5, 0.8], seed: [0, 1]}
      optuna:
        num_samples: 4
        sampler: random
        objectives: [{metric: val_accuracy, mode: max}]
        fixed: {prune.method: imp}
        space:
          prune.sparsity: {type: float, low: 0.3, high: 0.7}
    """
)


def _finished(out: Path, phase: str) -> dict[str, dict]:
    records = {}
    for path in (out / "trials").glob(f"{phase}-*.json"):
        try:
            record = json.loads(path.read_text())
        except json.JSONDecodeError:
            continue
        if "row" in record:
            records[path.stem] = record
    return records


def _kill_when(cmd: list[str], out: Path, phase: str, more: int, sig=signal.SIGKILL,
               timeout: float = 240) -> tuple[dict[str, dict], subprocess.Popen]:
    """Start the driver, send it ``sig`` once ``more`` trials of ``phase`` ended than had before; return
    the finished records."""
    at_least = len(_finished(out, phase)) + more
    log = (out.parent / f"driver-{time.time_ns()}.log").open("w+")  # a pipe nobody reads would fill and block it
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, text=True, start_new_session=True)
    proc.stderr = log
    deadline = time.time() + timeout
    try:
        while time.time() < deadline:
            done = _finished(out, phase)
            if len(done) >= at_least:
                proc.session_before = session_pids(proc.pid)
                os.kill(proc.pid, sig)
                proc.wait(120)
                if sig != signal.SIGKILL:  # a stopped driver stops what it started
                    until = time.time() + 30
                    while session_pids(proc.pid) and time.time() < until:
                        time.sleep(0.2)
                    proc.left_behind = session_pids(proc.pid)
                return done, proc
            assert proc.poll() is None, f"the sweep ended (rc {proc.returncode}) before it could be killed"
            time.sleep(0.1)
        raise AssertionError(f"no {at_least} finished {phase} trials within {timeout}s")
    finally:
        # Ray's workers die with their driver; its agents may linger a while: stop what the test started.
        kill_groups(proc.pid)
        proc.wait(30)
        _settle(out, phase)


def _settle(out: Path, phase: str, quiet_s: float = 3.0, limit_s: float = 60.0) -> None:
    """Wait until no trial of the stopped driver ends any more: its Ray workers outlive it briefly and
    may still finish a trial (which a resume then reuses), and a count taken meanwhile would be stale."""
    deadline, last, since = time.time() + limit_s, len(_finished(out, phase)), time.time()
    while time.time() < deadline and time.time() - since < quiet_s:
        time.sleep(0.3)
        now = len(_finished(out, phase))
        if now != last:
            last, since = now, time.time()


@pytest.mark.slow
def test_sigkilled_sweep_resumes_without_duplicates_or_recomputation(tmp_path, capsys):
    cfg = tmp_path / "sweep.yaml"
    cfg.write_text(CONFIG)
    out = tmp_path / "out"
    cli = [sys.executable, "-m", "pipelines.cli"]
    _kill_when(cli + ["run", str(cfg), "--out", str(out)], out, "grid", 2)
    assert len(_finished(out, "grid")) < 12

    # Running the same sweep again into the same directory says how to resume instead.
    assert main(["run", str(cfg), "--out", str(out)]) == 2
    assert f"prunetune resume {out}" in capsys.readouterr().err

    # Ctrl-C stops the sweep (the Optuna phase does not start) and says how to resume.
    interrupted, proc = _kill_when(cli + ["resume", str(out)], out, "grid", 1, signal.SIGINT)
    proc.stderr.seek(0)
    stderr = proc.stderr.read()
    assert proc.returncode == 130 and f"prunetune resume {out}" in stderr, stderr[-4000:]
    assert json.loads((out / "sweep.json").read_text())["status"] == "interrupted"
    assert not _finished(out, "optuna") and not (out / "optuna.db").exists()
    assert len(proc.session_before) > 2 and not proc.left_behind, (proc.session_before, proc.left_behind)
    time.sleep(1)  # records of trials that ended while the stop was under way
    before_grid = _finished(out, "grid")

    _kill_when(cli + ["resume", str(out)], out, "optuna", 1)
    time.sleep(1)
    before_optuna = _finished(out, "optuna")
    assert len(before_optuna) < 4 and len(_finished(out, "grid")) == 12

    assert main(["resume", str(out)]) == 0
    table = pq.read_table(out / "results.parquet").to_pylist()
    assert sorted(r["slot"] for r in table) == sorted([f"grid-{i}" for i in range(12)] + [f"optuna-{i}" for i in range(4)])
    assert all(r["status"] == "ok" for r in table), [r["error"] for r in table if r["status"] != "ok"]
    by_slot = {r["slot"]: r for r in table}
    for slot, record in {**before_grid, **before_optuna}.items():  # finished before a kill: not run again
        assert by_slot[slot]["trial_id"] == record["row"]["trial_id"], slot

    client = MlflowClient(tracking_uri=f"sqlite:///{out}/mlflow.db")
    exp = client.get_experiment_by_name("resumable")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("prunetune.role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("prunetune.role") == "trial"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert sorted(c.info.run_id for c in children) == sorted(r["mlflow_run_id"] for r in table)
    assert all(c.info.status == "FINISHED" for c in children)
    for child in children:
        files = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert {"mask.pt", "model.pt", "sparsity.json"} <= files, files

    study = optuna.load_study(study_name="resumable", storage=f"sqlite:///{out}/optuna.db")
    assert [t.number for t in study.trials] == [0, 1, 2, 3]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)

    done = collections.Counter((r["stage"], r["key"]) for r in ArtifactStore(out / "store").index()
                               if r["status"] == "done")
    assert max(done.values()) == 1, [k for k, n in done.items() if n > 1]


@pytest.mark.slow
def test_sigterm_stops_a_sweep_like_ctrl_c(tmp_path):
    cfg = tmp_path / "sweep.yaml"
    cfg.write_text(CONFIG.replace("seed: [0, 1]", "seed: [0]"))
    out = tmp_path / "out"
    _, proc = _kill_when([sys.executable, "-m", "pipelines.cli", "run", str(cfg), "--out", str(out)],
                         out, "grid", 1, signal.SIGTERM)
    proc.stderr.seek(0)
    stderr = proc.stderr.read()
    assert proc.returncode == 130 and f"prunetune resume {out}" in stderr, stderr[-4000:]
    assert json.loads((out / "sweep.json").read_text())["status"] == "interrupted"
    assert len(proc.session_before) > 2 and not proc.left_behind, (proc.session_before, proc.left_behind)
    client = MlflowClient(tracking_uri=f"sqlite:///{out}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("resumable").experiment_id], max_results=100)
    assert runs and not [r for r in runs if r.info.status == "RUNNING"]
