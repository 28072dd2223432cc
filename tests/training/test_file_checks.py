"""A stored file is trusted only after its checksum and torch's weights_only load: a file with a forged
checksum (meta.json rewritten to match) is reported, named, and recomputed; its payload never runs."""
import hashlib
import json
import pickle

from pipelines.config import trial_config
from pipelines.trial import trial_graph
from training.stage import StageEnv, materialize
from training.store import ArtifactStore


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))  # what a weights_only load must never call


def test_a_forged_pt_file_is_refused_reported_and_recomputed(tmp_path):
    raw = {"data": {"name": "digits"}, "model": {"name": "mlp", "options": {"widths": [8]}},
           "prune": {"method": "random", "sparsity": 0.5}}
    store = ArtifactStore(str(tmp_path / "store"))
    mask_stage = trial_graph(trial_config(raw, {})).plan.mask
    lines: list[str] = []
    env = StageEnv.on(store, log=lines.append)
    first = materialize(mask_stage, env)
    good = first.file("mask.pt").read_bytes()

    marker = tmp_path / "payload-ran"
    forged = first.path / "mask.pt"
    forged.write_bytes(pickle.dumps(_Payload(marker)))
    meta_path = first.path / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["checksums"]["mask.pt"] = hashlib.sha256(forged.read_bytes()).hexdigest()  # the forgery
    meta_path.write_text(json.dumps(meta))

    again = materialize(mask_stage, StageEnv.on(store, log=lines.append))
    assert not marker.exists(), "the payload ran"
    assert not again.cached and again.file("mask.pt").read_bytes() == good  # recomputed, same seed
    said = "\n".join(lines)
    assert f"{mask_stage.name}/{mask_stage.key}/mask.pt" in said and "weights_only" in said, said
