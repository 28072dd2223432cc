"""IMP as a chain of stages: level schedule, rewinding to theta_k, selection, sharing and resume."""
import math

import pytest
import torch

from pruning.config import PruneConfig
from pruning.imp import level_densities
from pruning.methods import TrialSettings, plan_method
from training.data import DataConfig, load_dataset
from training.models import ModelConfig, create_model
from training.stage import StageEnv, materialize
from training.store import ArtifactStore
from training.trainer import TrainConfig, Trainer

DATA = DataConfig(name="digits", val_fraction=0.1)
MODEL = ModelConfig(name="mlp", options={"widths": [64, 32]})
TRAIN = TrainConfig(epochs=2, batch_size=128, lr=0.05)


def _settings(density: float, rewind_step: int = 0) -> TrialSettings:
    prune = PruneConfig(method="imp", sparsity=1 - density, rewind_step=rewind_step)
    return TrialSettings(seed=0, data=DATA, model=MODEL, train=TRAIN, prune=prune)


def _env(root) -> StageEnv:
    return StageEnv.on(ArtifactStore(root), log=lambda m: None)


def _load(entry, name):
    return torch.load(entry.file(name), weights_only=True)


def test_level_densities_follow_0_8_power_and_end_at_target():
    d = level_densities(0.1, 0.2)
    assert len(d) == math.ceil(math.log(0.1) / math.log(0.8))
    assert d[:-1] == pytest.approx([0.8 ** l for l in range(1, len(d))])
    assert d[-1] == 0.1
    assert level_densities(0.8 ** 3, 0.2) == pytest.approx([0.8, 0.64, 0.512])
    assert level_densities(0.5, 0.5) == [0.5]


def test_imp_rewinds_survivors_to_theta_k_and_prunes_by_trained_magnitude(tmp_path):
    k = 7
    plan = plan_method(_settings(0.8 ** 3, rewind_step=k))
    env = _env(tmp_path)
    final = materialize(plan.mask, env)
    assert [s.name for s in plan.levels] == ["pretrain", "imp_level", "imp_level"]
    level1, level2 = (env.store.get(s.name, s.key) for s in plan.levels[1:])
    total = sum(m.numel() for m in _load(final, "mask.pt").values())
    assert sum(int(m.sum()) for m in _load(level1, "mask.pt").values()) == round(0.8 * total)
    assert sum(int(m.sum()) for m in _load(level2, "mask.pt").values()) == round(0.64 * total)
    mask = _load(final, "mask.pt")
    assert sum(int(m.sum()) for m in mask.values()) == round(0.8 ** 3 * total)

    # theta_k is the dense run's state at iteration k, taken independently.
    pretrain = env.store.get(plan.start.name, plan.start.key)
    rewind = _load(pretrain, "rewind.pt")
    assert rewind["step"] == k
    data = load_dataset(DATA)
    torch.manual_seed(0)
    model = create_model(MODEL, data.input_shape, data.num_classes)
    ref = Trainer(TRAIN, data, seed=0).fit(model, stop_at=k, eval_every_epoch=False).final_state
    for name, value in ref.model.items():
        assert torch.equal(rewind["model"][name], value), name

    # Global selection: every weight dropped at the last step is no larger than any survivor.
    trained2, prev = _load(level2, "model.pt"), _load(level2, "mask.pt")
    kept = torch.cat([trained2[n][m].abs() for n, m in mask.items()])
    dropped = torch.cat([trained2[n][prev[n] & ~m].abs() for n, m in mask.items()])
    assert dropped.max() <= kept.min()
    # Each level trained the survivors from theta_k: pruned weights stay zero in its trained net.
    for n, m in prev.items():
        assert torch.count_nonzero(trained2[n][~m]) == 0


def test_targets_share_levels_and_a_lost_level_is_recomputed_alone(tmp_path):
    env = _env(tmp_path)
    shallow, deep = plan_method(_settings(0.64)), plan_method(_settings(0.8 ** 3))
    materialize(shallow.mask, env)
    materialize(deep.mask, env)
    runs = [r for r in env.store.index() if r["status"] == "done"]
    assert sorted(r["stage"] for r in runs if r["stage"] != "imp_mask") == ["imp_level", "imp_level", "pretrain"]
    assert deep.levels[1].key == shallow.levels[1].key  # level 1 does not depend on the target
    # A lost level (a killed run) is recomputed, and only it.
    env.store.delete(deep.levels[2].name, deep.levels[2].key)
    env.store.delete(deep.mask.name, deep.mask.key)
    materialize(deep.mask, env)
    again = [r for r in env.store.index() if r["status"] == "done"]
    assert len(again) == len(runs) + 2
    assert {r["stage"] for r in again[len(runs):]} == {"imp_level", "imp_mask"}


def test_a_corrupt_level_is_reported_and_recomputed(tmp_path):
    env = _env(tmp_path)
    plan = plan_method(_settings(0.64))
    first = _load(materialize(plan.mask, env), "mask.pt")
    level1 = env.store.get(plan.levels[1].name, plan.levels[1].key)
    level1.file("model.pt").write_bytes(b"garbage")
    env.store.delete(plan.mask.name, plan.mask.key)
    seen = []
    env.log = seen.append
    second = _load(materialize(plan.mask, env), "mask.pt")
    assert any("imp_level" in line and plan.levels[1].key in line for line in seen), seen
    for n in first:
        assert torch.equal(first[n], second[n])  # recomputed deterministically
