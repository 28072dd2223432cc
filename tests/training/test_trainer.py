import math

import pytest
import torch

from pruning.mask import prunable_parameters
from pruning.select import select_topk
from training.data import DataConfig, load_dataset
from training.models import create_model
from training.trainer import TrainConfig, Trainer


@pytest.fixture(scope="module")
def digits():
    return load_dataset(DataConfig(name="digits", val_fraction=0.1))


def _model(seed=0):
    torch.manual_seed(seed)
    return create_model("mlp", (1, 8, 8), 10, widths=[64, 32])


def _random_mask(model, density=0.3, seed=1):
    gen = torch.Generator().manual_seed(seed)
    scores = {n: torch.rand(p.shape, generator=gen) for n, p in prunable_parameters(model).items()}
    return select_topk(scores, density)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_masked_weights_stay_exactly_zero_and_never_update(digits, optimizer):
    cfg = TrainConfig(epochs=12, batch_size=64, optimizer=optimizer, lr=0.05 if optimizer == "sgd" else 1e-3,
                      momentum=0.9, weight_decay=5e-3, schedule="constant")
    trainer = Trainer(cfg, digits, seed=0)
    assert trainer.total_steps >= 200
    model = _model()
    mask = _random_mask(model)
    # Start from a state whose optimizer has dense momentum: it must not leak into pruned weights.
    warm = trainer.fit(model, stop_at=5, eval_every_epoch=False).final_state
    result = trainer.fit(model, mask=mask, start=warm, eval_every_epoch=False)
    named = dict(model.named_parameters())
    for n, m in mask.items():
        assert torch.count_nonzero(named[n].detach()[~m]) == 0, n
        # survivors did train
        assert torch.count_nonzero(named[n].detach()[m]) == int(m.sum())
    assert result.final_state.step == trainer.total_steps
    opt_state = result.final_state.optimizer["state"]
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    for idx, state in opt_state.items():
        n = names[idx]
        if n in mask:
            for v in state.values():
                if isinstance(v, torch.Tensor) and v.shape == mask[n].shape:
                    assert torch.count_nonzero(v[~mask[n]]) == 0, (n, "optimizer state leaks")


def test_snapshot_at_k_and_resume_match_an_uninterrupted_run(digits):
    cfg = TrainConfig(epochs=3, batch_size=100, lr=0.05, schedule="multistep", milestones=[1.5])
    trainer = Trainer(cfg, digits, seed=3)
    k = trainer.steps_per_epoch + 4  # mid-epoch, after a full epoch
    full_model = _model()
    full = trainer.fit(full_model, snapshot_at=k, eval_every_epoch=False)
    assert full.snapshot.step == k

    part_model = _model()
    part = trainer.fit(part_model, stop_at=k, eval_every_epoch=False)
    for name, value in part.final_state.model.items():
        assert torch.equal(value, full.snapshot.model[name]), name

    resumed_model = _model(seed=99)  # different init: everything must come from the snapshot
    resumed = trainer.fit(resumed_model, start=full.snapshot, eval_every_epoch=False)
    for name, value in resumed.final_state.model.items():
        assert torch.allclose(value, full.final_state.model[name], atol=1e-6), name
    assert resumed.sample_passes == full.sample_passes - part.sample_passes


def test_lr_schedules(digits):
    t = Trainer(TrainConfig(epochs=4, lr=0.1, schedule="multistep", milestones=[1, 3], gamma=0.1), digits)
    spe = t.steps_per_epoch
    assert t.lr_at(0) == pytest.approx(0.1)
    assert t.lr_at(spe) == pytest.approx(0.01)
    assert t.lr_at(3 * spe) == pytest.approx(0.001)
    c = Trainer(TrainConfig(epochs=4, lr=0.1, schedule="cosine"), digits)
    assert c.lr_at(0) == pytest.approx(0.1)
    assert c.lr_at(c.total_steps // 2) == pytest.approx(0.05, rel=1e-2)


def test_training_is_seeded_and_learns(digits):
    cfg = TrainConfig(epochs=5, lr=0.05)
    a = Trainer(cfg, digits, seed=0).fit(_model())
    b = Trainer(cfg, digits, seed=0).fit(_model())
    assert a.test.accuracy == b.test.accuracy
    assert a.test.accuracy > 0.9
    assert not math.isnan(a.val.accuracy)


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="milestones"):
        TrainConfig(epochs=5, schedule="multistep", milestones=[7])
    with pytest.raises(ValueError, match="lr"):
        TrainConfig(lr=0)
    with pytest.raises(ValueError, match="optimizr"):
        TrainConfig(optimizr="sgd")
