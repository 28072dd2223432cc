"""A tracking server that dies mid-sweep: the sweep stops within a minute naming the URI, marked
interrupted, with nothing left running; once the server is back, ``resume`` finishes it under the same
parent run with one child per row."""
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from pipelines.tracking_watch import is_unreachable
from pipelines.ui_cmd import free_port, mlflow_executable
from tests.processes import kill_groups, session_pids

CONFIG = """
name: lost
data: {{name: digits}}
model: {{name: mlp, options: {{widths: [32]}}}}
train: {{epochs: 1, batch_size: 64}}
tracking: {{tracking_uri: "{uri}"}}
ray: {{num_cpus: 1}}
sweep:
  grid:
    - {{prune.method: [random, magnitude], prune.sparsity: [0.5, 0.8, 0.9, 0.95]}}
"""


def _server(db: Path, port: int) -> subprocess.Popen:
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    # The artifacts it proxies go beside its database (its default, ./mlartifacts, is the working directory).
    proc = subprocess.Popen([mlflow_executable(), "server", "--backend-store-uri", f"sqlite:///{db}",
                             "--artifacts-destination", str(db.parent / "mlartifacts"),
                             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, env=env,
                            cwd=db.parent)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return proc
        except OSError:
            time.sleep(0.3)
    kill_groups(proc.pid)
    raise AssertionError("the MLflow server did not start")


def test_connection_failures_are_told_apart_from_trial_errors():
    from mlflow.exceptions import MlflowException

    try:
        try:
            raise ConnectionRefusedError(111, "Connection refused")
        except ConnectionRefusedError as inner:
            raise MlflowException("API request to http://127.0.0.1:1/api failed") from inner
    except MlflowException as exc:
        assert is_unreachable(exc)
    assert not is_unreachable(FloatingPointError("training diverged"))
    assert not is_unreachable(MlflowException("Changing param values is not allowed"))


@pytest.mark.slow
def test_a_sweep_whose_tracking_server_dies_stops_and_resumes(tmp_path):
    from mlflow.tracking import MlflowClient

    port, db = free_port(), tmp_path / "server.db"
    uri = f"http://127.0.0.1:{port}"
    config, out = tmp_path / "lost.yaml", tmp_path / "out"
    config.write_text(CONFIG.format(uri=uri))
    server = _server(db, port)
    log = (tmp_path / "driver.log").open("w+")
    driver = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "run", str(config), "--out", str(out)],
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 240
        while len(list((out / "trials").glob("*.json"))) < 2 or not any(
                "row" in json.loads(p.read_text() or "{}") for p in (out / "trials").glob("*.json")):
            assert driver.poll() is None and time.time() < deadline, log.seek(0) or log.read()
            time.sleep(0.2)
        kill_groups(server.pid)
        server.wait(30)
        killed = time.time()
        rc = driver.wait(90)
        took = time.time() - killed
        log.seek(0)
        printed = log.read()
        assert rc == 1, printed[-3000:]
        assert took < 60, f"{took:.0f} s to stop"
        assert uri in printed and "prunetune resume" in printed and "Traceback" not in printed.split(uri)[-1]
        until = time.time() + 30
        while session_pids(driver.pid) and time.time() < until:
            time.sleep(0.2)
        assert not session_pids(driver.pid), "the stopped sweep left processes running"
        assert json.loads((out / "sweep.json").read_text())["status"] == "interrupted"

        server = _server(db, port)
        resumed = subprocess.run([sys.executable, "-m", "pipelines.cli", "resume", str(out), "--quiet"],
                                 capture_output=True, text=True, timeout=400)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        import pyarrow.parquet as pq

        rows = pq.read_table(out / "results.parquet").to_pylist()
        assert len(rows) == 8 and all(r["status"] == "ok" for r in rows)
        client = MlflowClient(tracking_uri=uri)
        runs = client.search_runs([client.get_experiment_by_name("lost").experiment_id], max_results=1000)
        parents = [r for r in runs if r.data.tags.get("prunetune.role") == "sweep"]
        children = [r for r in runs if r.data.tags.get("prunetune.role") == "trial"]
        assert len(parents) == 1 and len(children) == len(rows), (len(parents), len(children))
        assert {c.info.run_id for c in children} == {r["mlflow_run_id"] for r in rows}
        assert all(c.info.status == "FINISHED" for c in children)
    finally:
        kill_groups(driver.pid, server.pid)
        driver.wait(30)
        server.wait(30)
        log.close()
