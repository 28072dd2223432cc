"""A cluster whose nodes share no filesystem, on one machine: S3 (moto) and an MLflow server proxying
artifacts to it on 127.0.0.1, a Ray head, and a second node in its own mount namespace with a private
tmpfs over the sweep's parent directory, so its processes cannot see the driver's ``--out`` (nor the
head's temp directory: its TMPDIR is inside that tmpfs too). A grid with a shared pre-training and an
Optuna phase runs on both nodes; the driver is SIGKILLed after its first row and ``prunetune resume``
finishes the sweep. Whatever the sweep keeps must then be reachable from the driver's machine: rows
and trial records in DIR, every stage in S3 once per key, every trial's artifacts through the server."""
from __future__ import annotations

import collections
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.cluster_fixture import two_node_cluster
from tests.mlflow_server import mlflow_server
from tests.processes import kill_groups
from tests.s3_server import s3_server
from training.store import MANIFEST, ArtifactStore

CONFIG = textwrap.dedent(
    """
    name: nosharedfs
    seed: 0
    data: {name: digits, val_fraction: 0.15}
    model: {name: mlp, options: {widths: [16]}}
    train: {epochs: 2, batch_size: 128, lr: 0.05}
    prune: {method: magnitude, sparsity: 0.5}
    resources: {cpu: 1}
    sweep:
      max_concurrent_trials: 2
      grid:
        - {prune.method: [magnitude, snip], prune.sparsity: [0.5, 0.8]}
      optuna:
        num_samples: 2
        sampler: random
        objectives: [{metric: val_accuracy, mode: max}]
        fixed: {prune.method: magnitude}
        space:
          prune.sparsity: {type: float, low: 0.3, high: 0.7}
    """
)
SLOTS = [f"grid-{i}" for i in range(4)] + ["optuna-0", "optuna-1"]


def _rows(out: Path) -> dict[str, dict]:
    rows = {}
    for path in (out / "trials").glob("*.json"):
        with contextlib.suppress(json.JSONDecodeError):
            record = json.loads(path.read_text())
            if "row" in record:
                rows[path.stem] = record
    return rows


def _node2_sees(path: Path) -> bool:
    """Whether the second node's raylet sees ``path``: looked up in its own mount namespace, through
    /proc/<pid>/root (the raylet is the process whose TMPDIR is inside the private tmpfs)."""
    for proc in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if proc.name.isdigit() and b"raylet" in (proc / "cmdline").read_bytes().split(b"\0")[0] and \
                    f"TMPDIR={path.parent}/tmp".encode() in (proc / "environ").read_bytes():
                return (proc / "root" / str(path).lstrip("/")).exists()
    raise AssertionError("no raylet of the second node found")


@pytest.mark.slow
def test_a_sweep_on_nodes_that_share_no_filesystem_survives_a_driver_kill(tmp_path):
    hidden = Path(tempfile.mkdtemp(prefix="nsfs_", dir="/tmp"))  # the second node sees an empty tmpfs here
    out = hidden / "sweep"
    (hidden / "cfg.yaml").write_text(CONFIG)
    unshare = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
               'mount -t tmpfs prunetune-private "$0" && mkdir "$0/tmp" && exec "$@"', str(hidden)]
    try:
        with s3_server(log=tmp_path / "moto.log") as s3, mlflow_server(s3, tmp_path) as (tracking, wait_up), \
                two_node_cluster(node2_wrap=unshare, node2_env={"TMPDIR": f"{hidden}/tmp"},
                                 node2_args=["--node-ip-address=127.0.0.2"]) as cluster:
            assert _node2_sees(hidden / "cfg.yaml") is False  # the isolation is real
            wait_up()
            t0 = time.monotonic()
            store_uri = s3.uri("store")
            cli = [sys.executable, "-m", "pipelines.cli"]
            run = cli + ["run", str(hidden / "cfg.yaml"), "--out", str(out), "--set", f"store.uri={store_uri}",
                         "--set", f"tracking.tracking_uri={tracking}", "--set", f"ray.address={cluster.address}"]
            env = {**cluster.env, **{k: os.environ[k] for k in os.environ if k.startswith("AWS_")}}
            with (tmp_path / "driver.log").open("w+") as log:
                driver = subprocess.Popen(run, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
                try:
                    deadline = time.monotonic() + 240
                    while not _rows(out):
                        assert driver.poll() is None, f"the sweep ended before its kill:\n{log.seek(0) or log.read()[-3000:]}"
                        assert time.monotonic() < deadline, "no trial finished"
                        time.sleep(0.1)
                    os.kill(driver.pid, signal.SIGKILL)
                    driver.wait(30)
                finally:
                    kill_groups(driver.pid)
            before = _rows(out)
            assert len(before) < len(SLOTS)

            resumed = subprocess.run(cli + ["resume", str(out)], env=env, capture_output=True, text=True, timeout=400)
            assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]

            print(f"sweep, kill and resume: {time.monotonic() - t0:.0f} s")
            # rows and trial records: in the driver's DIR, every slot, whichever node ran it
            table = {r["slot"]: r for r in pq.read_table(out / "results.parquet").to_pylist()}
            assert sorted(table) == sorted(SLOTS), resumed.stdout[-4000:] + resumed.stderr[-2000:]
            assert all(r["status"] == "ok" for r in table.values()), [r["error"] for r in table.values()]
            records = {p.stem: json.loads(p.read_text()) for p in (out / "trials").glob("*.json")}
            assert sorted(records) == sorted(SLOTS)
            assert all(records[s]["row"]["mlflow_run_id"] == table[s]["mlflow_run_id"] for s in SLOTS)
            assert all(before[s]["row"]["trial_id"] == table[s]["trial_id"] for s in before)  # not run again

            # the store: each stage once per key in S3, computed on both nodes, none after the kill again
            store = ArtifactStore(store_uri)
            done = [r for r in store.index() if r["status"] == "done"]
            per_key = collections.Counter((r["stage"], r["key"]) for r in done)
            assert per_key and max(per_key.values()) == 1, [k for k, n in per_key.items() if n > 1]
            assert len({r["ray_node_id"] for r in done if r["stage"] == "evaluate"}) == 2
            assert "pretrain" in {stage for stage, _ in per_key}  # the shared stage
            keys = s3.keys("store/stages/")
            for stage, key in per_key:
                entry = [k.split("/")[4] for k in keys if k.startswith(f"store/stages/{stage}/{key}/")]
                assert MANIFEST in entry and len({e for e in entry if e.startswith("attempt-")}) == 1, (stage, key)
            assert (out / "report.html").is_file()  # drawn from the rows and the store on S3

            # MLflow: the trials' artifacts went through the server to the bucket
            from mlflow.tracking import MlflowClient

            client = MlflowClient(tracking_uri=tracking)
            exp = client.get_experiment_by_name("nosharedfs")
            assert exp.artifact_location.startswith("mlflow-artifacts:")
            for slot in SLOTS:
                run_id = table[slot]["mlflow_run_id"]
                assert client.get_run(run_id).info.status == "FINISHED"
                assert {"mask.pt", "model.pt"} <= {a.path for a in client.list_artifacts(run_id)}
                assert any(k.endswith(f"{run_id}/artifacts/model.pt") for k in s3.keys("mlartifacts/")), slot
            assert not (out / "mlartifacts").exists()
    finally:
        shutil.rmtree(hidden, ignore_errors=True)
