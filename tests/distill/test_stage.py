"""The experts and distill stages: MTT sets that differ only in how they match share one experts stage."""
import collections

from distill.methods import DistillConfig
from distill.stage import Distill, Experts, load_set
from training.data import DataConfig
from training.stage import StageEnv, materialize
from training.store import ArtifactStore

TINY_NET = {"name": "convnet", "options": {"width": 8, "depth": 2}}
OPTS = {"num_experts": 2, "expert_epochs": 3, "expert_lr": 0.05, "syn_steps": 4, "expert_epochs_match": 2,
        "max_start_epoch": 2, "lr_lr": 1e-4, "batch_syn": 10}
DATA = DataConfig(name="digits")


def _mtt(**kw):
    return DistillConfig(**{"method": "mtt", "ipc": 2, "iterations": 3, "lr_images": 10.0, "device": "cpu",
                            "network": TINY_NET, "options": OPTS, **kw})


def test_mtt_sets_share_their_expert_trajectories(tmp_path):
    env = StageEnv.on(ArtifactStore(tmp_path), log=lambda m: None)
    a, b = Distill(data=DATA, cfg=_mtt()), Distill(data=DATA, cfg=_mtt(ipc=3, lr_images=5.0))
    sets = [load_set(materialize(d, env)) for d in (a, b)]
    assert a.key != b.key and a.inputs()["experts"].key == b.inputs()["experts"].key
    runs = collections.Counter(r["stage"] for r in env.store.index() if r["status"] == "done")
    assert runs == {"experts": 1, "distill": 2}
    # Both sets matched the stage's trajectories and trained no experts of their own.
    assert [ds.cost["experts_reused"] for ds in sets] == [2, 2]
    assert len(sets[0]) == 20 and len(sets[1]) == 30
    # An option that changes the experts changes the experts stage; one that does not, does not.
    assert Experts(data=DATA, cfg=_mtt(options={**OPTS, "expert_lr": 0.1})).key != a.inputs()["experts"].key
    assert Experts(data=DATA, cfg=_mtt(options={**OPTS, "syn_steps": 3})).key == a.inputs()["experts"].key


def test_other_methods_need_no_experts():
    assert Distill(data=DATA, cfg=DistillConfig(method="dm")).inputs() == {}
