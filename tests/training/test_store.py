"""The artifact store: caching, atomic commits, corruption repair, leases across processes/threads."""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import pickle
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest

from training.store import ArtifactStore, CorruptEntryError


def _writer(text: str, counter: Path | None = None, sleep_s: float = 0.0):
    """A compute that records each call, so tests can count how often it really ran."""
    calls: list[Path] = []

    def compute(out: Path) -> dict:
        calls.append(out)
        time.sleep(sleep_s)
        if counter is not None:
            with open(counter, "a") as f:
                f.write(f"{os.getpid()}\n")
        (out / "weights.bin").write_bytes(text.encode() * 100)
        (out / "sub").mkdir()
        (out / "sub" / "notes.txt").write_text(text)
        return {"sample_passes": 123}

    compute.calls = calls
    return compute


def _worker(root: str, counter: str, barrier, results) -> None:
    # module level so the "spawn" context can import it in the child
    store = ArtifactStore(root, poll_s=0.05)
    barrier.wait()
    entry = store.get_or_compute("pretrain", "k1", _writer("shared", Path(counter), sleep_s=1.0))
    results.put((entry.cached, entry.file("sub/notes.txt").read_text()))


def test_compute_once_then_cached(tmp_path):
    store = ArtifactStore(tmp_path)
    compute = _writer("abc")
    first = store.get_or_compute("pretrain", "k1", compute, settings={"lr": 0.1}, inputs=["distill/k0"])
    again = store.get_or_compute("pretrain", "k1", compute)
    assert len(compute.calls) == 1
    assert (first.cached, again.cached) == (False, True)
    assert again.path == tmp_path / "stages" / "pretrain" / "k1"
    assert again.file("weights.bin").read_bytes() == b"abc" * 100
    assert again.file("sub/notes.txt").read_text() == "abc"
    meta = again.meta
    assert set(meta["checksums"]) == {"weights.bin", "sub/notes.txt"}
    assert meta["wall_time_s"] >= 0 and meta["host"] == socket.gethostname() and meta["pid"] == os.getpid()
    assert (meta["settings"], meta["inputs"], meta["sample_passes"]) == ({"lr": 0.1}, ["distill/k0"], 123)
    assert (tmp_path / "stages" / "pretrain" / "k1" / "DONE").is_file()
    with pytest.raises(CorruptEntryError, match="missing.bin"):
        again.file("missing.bin")
    assert not list((tmp_path / "stages" / "pretrain").glob(".tmp-*"))


def test_failed_compute_leaves_nothing_and_is_retried(tmp_path):
    store = ArtifactStore(tmp_path)

    def broken(out: Path) -> dict:
        (out / "weights.bin").write_bytes(b"half")
        raise RuntimeError("diverged at step 7")

    with pytest.raises(RuntimeError, match="diverged"):
        store.get_or_compute("retrain", "k1", broken)
    assert list((tmp_path / "stages").rglob("*")) == []
    assert not store.is_done("retrain", "k1") and store.get("retrain", "k1") is None
    assert not (tmp_path / "leases" / "retrain" / "k1.lease").exists()
    [row] = store.index()
    assert row["status"] == "error" and "diverged at step 7" in row["error"]

    compute = _writer("ok")
    entry = store.get_or_compute("retrain", "k1", compute)
    assert len(compute.calls) == 1 and not entry.cached
    assert [r["status"] for r in store.index()] == ["error", "done"]


def test_corrupt_entry_is_reported_then_recomputed(tmp_path):
    logs: list[str] = []
    store = ArtifactStore(tmp_path, log=logs.append)
    compute = _writer("xyz")
    entry = store.get_or_compute("mask", "k1", compute)
    weights = entry.file("weights.bin")
    weights.write_bytes(weights.read_bytes()[:10])

    with pytest.raises(CorruptEntryError, match=r"stages/mask/k1/weights\.bin.*sha256"):
        store.get("mask", "k1")
    repaired = store.get_or_compute("mask", "k1", compute)
    assert len(compute.calls) == 2 and not repaired.cached
    assert repaired.file("weights.bin").read_bytes() == b"xyz" * 100
    assert store.get("mask", "k1") is not None
    assert any("stages/mask/k1/weights.bin" in m for m in logs)

    repaired.file("sub/notes.txt").unlink()
    with pytest.raises(CorruptEntryError, match=r"notes\.txt: file is missing"):
        store.get("mask", "k1")


def test_processes_compute_a_key_once(tmp_path):
    ctx = mp.get_context("spawn")
    counter = tmp_path / "counter.txt"
    barrier, results = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(str(tmp_path / "store"), str(counter), barrier, results))
             for _ in range(4)]
    for p in procs:
        p.start()
    got = [results.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    assert len(counter.read_text().splitlines()) == 1
    assert sorted(got) == [(False, "shared")] + [(True, "shared")] * 3


def test_threads_compute_a_key_once(tmp_path):
    counter = tmp_path / "counter.txt"
    barrier, got = threading.Barrier(4), []

    def run() -> None:
        store = ArtifactStore(tmp_path / "store", poll_s=0.05)  # separate objects, one root
        barrier.wait()
        got.append(store.get_or_compute("pretrain", "k1", _writer("t", counter, sleep_s=0.5)).cached)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(counter.read_text().splitlines()) == 1
    assert sorted(got) == [False, True, True, True]


def _plant_lease(root: Path, stage: str, key: str, pid: int, mtime: float | None = None) -> Path:
    lease = root / "leases" / stage / f"{key}.lease"
    lease.parent.mkdir(parents=True, exist_ok=True)
    lease.write_text(json.dumps({"host": socket.gethostname(), "pid": pid,
                                 "token": uuid.uuid4().hex, "time": time.time()}))
    if mtime is not None:
        os.utime(lease, (mtime, mtime))
    return lease


def test_lease_of_dead_process_is_taken_over_at_once(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _plant_lease(tmp_path, "pretrain", "k1", dead.pid)
    logs: list[str] = []
    store = ArtifactStore(tmp_path, lease_timeout_s=10, poll_s=0.05, log=logs.append)
    t0 = time.monotonic()
    entry = store.get_or_compute("pretrain", "k1", _writer("a"))
    assert time.monotonic() - t0 < 3 and not entry.cached
    assert any(f"pid {dead.pid}" in m for m in logs)
    assert not list((tmp_path / "leases" / "pretrain").iterdir())


def test_lease_without_heartbeat_expires_and_live_lease_is_refreshed(tmp_path):
    # a live pid (this one) but an old heartbeat: only the timeout can free it
    _plant_lease(tmp_path, "pretrain", "k1", os.getpid(), mtime=time.time() - 100)
    store = ArtifactStore(tmp_path, lease_timeout_s=0.4, poll_s=0.05)
    lease = tmp_path / "leases" / "pretrain" / "k2.lease"
    seen: list[float] = []

    def slow(out: Path) -> None:
        seen.append(lease.stat().st_mtime)
        time.sleep(0.5)
        seen.append(lease.stat().st_mtime)
        (out / "x").write_text("x")

    assert not store.get_or_compute("pretrain", "k1", _writer("a")).cached
    store.get_or_compute("pretrain", "k2", slow)
    assert seen[1] > seen[0]  # the heartbeat touched it while computing
    assert not lease.exists()


def test_file_uri_matches_plain_path_and_store_pickles(tmp_path):
    via_uri = ArtifactStore(f"file://{tmp_path}")
    entry = via_uri.get_or_compute("distill", "k1", _writer("u"))
    plain = ArtifactStore(tmp_path)
    assert plain.get("distill", "k1").path == entry.path == tmp_path / "stages" / "distill" / "k1"

    blob = pickle.dumps(via_uri)
    assert len(blob) < 1000
    copy = pickle.loads(blob)
    assert copy.uri == via_uri.uri
    assert copy.get("distill", "k1").file("sub/notes.txt").read_text() == "u"
    assert copy.local_root() == tmp_path


def test_index_has_a_row_per_stage_run(tmp_path):
    store = ArtifactStore(tmp_path)
    assert store.index() == []
    for key in ("a", "b", "c"):
        store.get_or_compute("imp_level", key, _writer(key), settings={"level": key}, version=2)
    store.get_or_compute("imp_level", "a", _writer("a"))  # cached: no new row
    rows = store.index()
    assert [(r["stage"], r["key"], r["status"]) for r in rows] == [
        ("imp_level", k, "done") for k in ("a", "b", "c")]
    assert all(r["version"] == 2 and r["sample_passes"] == 123 and r["ray_node_id"] is None
               for r in rows)
    assert json.loads(rows[1]["settings"]) == {"level": "b"}


def test_non_local_filesystem_hands_out_verified_local_copies(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the local copies go
    store = ArtifactStore(f"mock:///{uuid.uuid4().hex}")  # in-memory, no leases
    compute = _writer("m")
    entry = store.get_or_compute("retrain", "k1", compute)
    assert store.local_root() is None and entry.path.is_relative_to(tmp_path)
    assert entry.file("weights.bin").read_bytes() == b"m" * 100
    assert store.get_or_compute("retrain", "k1", compute).cached and len(compute.calls) == 1
    assert [r["status"] for r in store.index()] == ["done"]
    with pytest.raises(ValueError, match="must be non-empty"):
        store.get("retrain", "../escape")
