"""The store on S3 (moto on 127.0.0.1): entries are whole or absent, and on a two-node Ray cluster the
store's coordinator makes a missing stage computed once, and hands a dead holder's lease to a waiter."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.cluster_fixture import two_node_cluster
from tests.s3_server import s3_server
from training.store import MANIFEST, ArtifactStore, CorruptEntryError


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with s3_server(log=tmp_path_factory.mktemp("moto") / "moto.log") as server:
        yield server


def _attempts(s3, prefix: str, stage: str, key: str) -> set[str]:
    base = f"{prefix}/stages/{stage}/{key}/"
    return {k.removeprefix(base).split("/")[0] for k in s3.keys(base) if k.removeprefix(base).startswith("attempt-")}


def test_an_entry_on_s3_is_its_files_then_one_manifest(s3, tmp_path, monkeypatch):
    import tempfile

    store = ArtifactStore(s3.uri("whole"))

    def fails(out: Path):
        (out / "model.bin").write_bytes(b"half")
        raise RuntimeError("killed mid-stage")

    with pytest.raises(RuntimeError):
        store.get_or_compute("retrain", "k1", fails)
    assert not store.is_done("retrain", "k1") and store.get("retrain", "k1") is None
    # what a holder killed between its upload and its manifest leaves: not an entry, and removed
    s3.client().put_object(Bucket=s3.bucket, Key="whole/stages/retrain/k1/attempt-0-dead/model.bin", Body=b"h")
    assert not store.is_done("retrain", "k1")

    def writes(out: Path):
        (out / "model.bin").write_bytes(b"w" * 1000)

    entry = store.get_or_compute("retrain", "k1", writes)
    keys = s3.keys("whole/stages/retrain/k1/")
    assert f"whole/stages/retrain/k1/{MANIFEST}" in keys
    assert _attempts(s3, "whole", "retrain", "k1") == {entry.meta["attempt"]}  # the dead one's remains are gone
    assert entry.file("model.bin").read_bytes() == b"w" * 1000 and not entry.cached

    # damaged in the bucket after the commit: reported, then recomputed under the lease
    attempt = entry.meta["attempt"]
    s3.client().put_object(Bucket=s3.bucket, Key=f"whole/stages/retrain/k1/{attempt}/model.bin", Body=b"x")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # another host: no verified local copy yet
    reread = ArtifactStore(s3.uri("whole"))
    with pytest.raises(CorruptEntryError, match="sha256"):
        reread.get("retrain", "k1")
    again = reread.get_or_compute("retrain", "k1", writes)
    assert not again.cached and again.file("model.bin").read_bytes() == b"w" * 1000


def test_an_unreachable_or_missing_bucket_is_named_by_the_preflight(s3):
    from pipelines.config import ConfigError
    from pipelines.preflight import check_store_uri

    check_store_uri(s3.uri("ok"))
    with pytest.raises(ConfigError, match=r"store\.uri s3://no-such-bucket/x: .*(bucket|NoSuchBucket)"):
        check_store_uri(s3.uri("x").replace(f"s3://{s3.bucket}/", "s3://no-such-bucket/"))
    with pytest.raises(ConfigError, match=r"store\.uri s3://b/x: cannot reach"):
        check_store_uri("s3://b/x?endpoint_override=127.0.0.1:9&scheme=http&region=us-east-1")


# ------------------------------------------------------------------------------ two nodes


@pytest.fixture(scope="module")
def cluster(s3):
    with two_node_cluster() as c:  # started after the S3 variables are set: the nodes inherit them
        import ray

        ray.init(address=c.address, logging_level="ERROR", log_to_driver=False)
        try:
            yield c
        finally:
            ray.shutdown()


def _on(node: str | None):
    """Scheduling options: the head (by id) or the second node (its custom resource)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    if node == "node2":
        return {"resources": {"node2": 0.01}, "num_cpus": 0}
    head = next(n["NodeID"] for n in ray.nodes() if n["Alive"] and "node2" not in n["Resources"])
    return {"num_cpus": 0, "scheduling_strategy": NodeAffinitySchedulingStrategy(head, soft=False)}


def _get_or_compute(uri: str, key: str, sleep_s: float, pid_file: str | None = None) -> dict:
    import ray

    def compute(out: Path):
        if pid_file:
            Path(pid_file).write_text(str(os.getpid()))
        time.sleep(sleep_s)
        (out / "w.bin").write_bytes(b"z" * 10)

    entry = ArtifactStore(uri, lease_timeout_s=600).get_or_compute("pretrain", key, compute)
    return {"cached": entry.cached, "node": ray.get_runtime_context().get_node_id(), "attempt": entry.meta["attempt"]}


@pytest.mark.slow
def test_two_nodes_needing_a_missing_stage_on_s3_compute_it_once(s3, cluster):
    import ray

    task = ray.remote(_get_or_compute)
    uri = s3.uri("dedup")
    refs = [task.options(**_on(node)).remote(uri, "shared", 2.0) for node in ("node2", None)]
    results = ray.get(refs, timeout=120)
    assert len({r["node"] for r in results}) == 2
    assert sorted(r["cached"] for r in results) == [False, True], results
    assert len(_attempts(s3, "dedup", "pretrain", "shared")) == 1
    done = [r for r in ArtifactStore(uri).index() if r["status"] == "done"]
    assert len(done) == 1


@pytest.mark.slow
def test_a_lease_held_by_a_killed_process_is_taken_over(s3, cluster, tmp_path):
    import ray

    task = ray.remote(_get_or_compute)
    uri, pid_file = s3.uri("takeover"), tmp_path / "holder.pid"
    holder = task.options(max_retries=0, **_on("node2")).remote(uri, "k", 600.0, str(pid_file))
    deadline = time.monotonic() + 60
    while not pid_file.is_file():
        assert time.monotonic() < deadline, "the holder never started computing"
        time.sleep(0.1)
    waiter = task.options(**_on(None)).remote(uri, "k", 0.0)
    time.sleep(3)  # the waiter finds the lease held
    assert not ray.wait([waiter], timeout=0)[0]
    os.kill(int(pid_file.read_text()), signal.SIGKILL)
    t0 = time.monotonic()
    result = ray.get(waiter, timeout=60)  # far below the 600 s lease timeout: the death was seen
    assert not result["cached"] and time.monotonic() - t0 < 30
    with pytest.raises(ray.exceptions.RayError):
        ray.get(holder, timeout=30)
    assert ArtifactStore(uri).is_done("pretrain", "k")
