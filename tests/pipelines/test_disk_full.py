"""A sweep whose output disk fills up: one line naming the cause, no traceback on the console, sweep.json
marked interrupted, no staging directory left; once there is space, ``resume`` finishes it with one
child run per row. The disk is a small tmpfs the test mounts and unmounts (root only)."""
import errno
import json
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipelines.outages import out_of_space, outage

CONFIG = """
name: full
data: {name: digits}
model: {name: mlp, options: {widths: [300, 100]}}
train: {epochs: 1, batch_size: 64}
ray: {num_cpus: 2}
sweep:
  grid:
    - {prune.method: [random, magnitude], prune.sparsity: [0.5, 0.8, 0.9], seed: [0, 1]}
"""


def test_a_full_disk_is_told_apart_from_a_trial_error():
    assert out_of_space(OSError(errno.ENOSPC, "No space left on device", "/x/y")) == "/x/y: No space left on device"
    try:
        try:
            raise sqlite3.OperationalError("database or disk is full")
        except sqlite3.OperationalError as inner:
            raise RuntimeError("(sqlite3.OperationalError) database or disk is full [SQL: UPDATE runs]") from inner
    except RuntimeError as exc:
        assert outage(exc).startswith("out of disk space")
    assert outage(FloatingPointError("training diverged")) is None
    assert outage(OSError(errno.EACCES, "Permission denied")) is None


def _mount(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


@pytest.mark.slow
def test_a_sweep_on_a_full_disk_stops_cleanly_and_resumes_once_there_is_space(tmp_path):
    disk = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
    if not _mount(disk, "6m"):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        config, out = tmp_path / "full.yaml", disk / "out"
        config.write_text(CONFIG)
        run = subprocess.run([sys.executable, "-m", "pipelines.cli", "run", str(config), "--out", str(out)],
                             capture_output=True, text=True, timeout=600)
        console = run.stdout + run.stderr
        assert run.returncode == 1, console[-3000:]
        assert "out of disk space" in console and f"prunetune resume {out}" in console, console[-2000:]
        assert "Traceback" not in console, console[-4000:]
        assert json.loads((out / "sweep.json").read_text())["status"] == "interrupted"
        assert not [p for p in out.rglob(".tmp-*")], "staging directories left behind"
        done = [p for p in (out / "trials").glob("*.json") if "row" in json.loads(p.read_text())]
        assert 0 < len(done) < 12  # it did stop part way

        subprocess.run(["mount", "-o", "remount,size=300m", str(disk)], check=True)
        resumed = subprocess.run([sys.executable, "-m", "pipelines.cli", "resume", str(out), "--quiet"],
                                 capture_output=True, text=True, timeout=600)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        rows = pq.read_table(out / "results.parquet").to_pylist()
        assert len(rows) == 12 and all(r["status"] == "ok" for r in rows)
        with sqlite3.connect(out / "mlflow.db") as db:
            runs = db.execute("SELECT r.status FROM runs r JOIN experiments e ON r.experiment_id = e.experiment_id "
                              "WHERE e.name = 'full'").fetchall()
        assert sorted(s for (s,) in runs) == ["FINISHED"] * 13  # one parent, one child per row
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)
