"""`prunetune ui DIR`: the MLflow UI on a finished sweep's store, on 127.0.0.1, stopped with all of its
processes on Ctrl-C."""
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

from pathlib import Path

import pytest

from pipelines.sweep_state import SweepState
from pipelines.tracking import RunLogger, default_tracking_uri, finish_run, share_trials_view, start_parent
from tests import browser
from tests.processes import children, kill_groups, session_pids

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def _finished_sweep(out: Path) -> SweepState:
    """A sweep's store as `prunetune run` leaves it: a parent run, two trial runs, sweep.json."""
    out.mkdir()
    uri = default_tracking_uri(out)
    target = start_parent(uri, "uitest", out / "mlartifacts", run_name="uitest-1", tags={}, description="a sweep")
    for i, (method, acc) in enumerate((("imp", 0.8123), ("random", 0.4567))):
        child = RunLogger.child(target, f"{method} s=0.9 seed=0 (grid-{i})", {"method": method})
        child.params({"phase": "grid", "prune": {"method": method, "sparsity": 0.9}, "seed": 0})
        child.metrics({"test_accuracy": acc, "val_accuracy": acc - 0.01, "achieved_sparsity": 0.9})
        child.finish()
    finish_run(uri, target.parent_run_id)
    share_trials_view(uri, target.experiment_id, target.parent_run_id, "uitest: trials")
    state = SweepState(name="uitest", config_hash="x", tracking_uri=uri, experiment_id=target.experiment_id,
                       parent_run_id=target.parent_run_id, store_uri=str(out / "store"),
                       study_path=str(out / "optuna.db"), study_name="uitest", status="finished")
    state.save(out)
    return state


def test_ui_serves_the_sweeps_runs_on_loopback_and_stops_everything_on_ctrl_c(tmp_path):
    out = tmp_path / "out"
    state = _finished_sweep(out)
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "ui", str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    servers: set[int] = set()
    try:
        url, lines = None, []
        deadline = time.time() + 120
        while url is None and time.time() < deadline and proc.poll() is None:
            line = proc.stdout.readline()
            lines.append(line)
            if line.startswith("sweep 'uitest': "):
                url = line.split(": ", 1)[1].strip()
        assert url, "".join(lines)
        base, _, fragment = url.partition("/#/")
        assert base.startswith("http://127.0.0.1:")
        assert fragment == f"experiments/{state.experiment_id}/runs?viewStateShareKey=sweep-{state.parent_run_id}"
        assert any(line.startswith("up in ") for line in lines), lines
        request = urllib.request.Request(
            f"{base}/api/2.0/mlflow/runs/search", method="POST", headers={"Content-Type": "application/json"},
            data=json.dumps({"experiment_ids": [state.experiment_id]}).encode())
        with urllib.request.urlopen(request, timeout=30) as resp:
            runs = json.load(resp)["runs"]
        names = sorted(r["info"]["run_name"] for r in runs)
        assert names == ["imp s=0.9 seed=0 (grid-0)", "random s=0.9 seed=0 (grid-1)", "uitest-1"]
        _the_printed_url_shows_every_trial_with_its_accuracy(url)
        # What the UI shows for the experiment: its runs table, not the GenAI traces overview.
        with urllib.request.urlopen(f"{base}/api/2.0/mlflow/experiments/get?experiment_id={state.experiment_id}",
                                    timeout=30) as resp:
            tags = {t["key"]: t["value"] for t in json.load(resp)["experiment"]["tags"]}
        assert tags["mlflow.experimentKind"] == "custom_model_development"
        # The UI runs in a session of its own (so that stopping it stops its helpers): track that one.
        servers = children(proc.pid)
        (server,) = servers
        started = session_pids(proc.pid) | session_pids(server)
        assert len(session_pids(server)) > 1, started  # mlflow's helper processes (workers, job runner)

        os.kill(proc.pid, signal.SIGINT)
        assert proc.wait(60) == 0
        deadline = time.time() + 30
        while (session_pids(proc.pid) | session_pids(server)) and time.time() < deadline:
            time.sleep(0.2)
        assert not session_pids(proc.pid) | session_pids(server), "the UI left processes running"
    finally:  # whatever a failed assertion left running (the server runs in a session of its own)
        kill_groups(proc.pid, *(servers or children(proc.pid)))
        proc.wait(10)


def _the_printed_url_shows_every_trial_with_its_accuracy(url: str) -> None:
    """In a browser: the trials as rows (not one collapsed parent) with their test accuracy as a column."""
    if not browser.available():
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: .ci/run installs it (apt-get install chromium)")
        return
    wanted = ["imp s=0.9 seed=0 (grid-0)", "random s=0.9 seed=0 (grid-1)", "0.8123", "0.4567"]
    _, text, shot = browser.visit(
        url, "document.body.innerText", settle_s=60, window="1600,1000",
        wait_for=" && ".join(f"document.body.innerText.includes({json.dumps(w)})" for w in wanted))
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "mlflow-ui-trials.png").write_bytes(shot)
    missing = [w for w in wanted if w not in text]
    assert not missing, f"not in the rendered runs table: {missing}\n{text[:3000]}"


def test_ui_on_a_directory_without_a_sweep_says_so(tmp_path, capsys):
    from pipelines.cli import main

    assert main(["ui", str(tmp_path)]) == 2
    assert "holds no sweep" in capsys.readouterr().err
