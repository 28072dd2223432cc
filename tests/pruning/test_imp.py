import math

import pytest
import torch

from pruning.imp import level_densities, run_imp
from training.data import DataConfig, load_dataset
from training.models import create_model
from training.trainer import TrainConfig, Trainer


@pytest.fixture(scope="module")
def trainer():
    data = load_dataset(DataConfig(name="digits", val_fraction=0.1))
    return Trainer(TrainConfig(epochs=2, batch_size=128, lr=0.05), data, seed=0)


def _model():
    torch.manual_seed(0)
    return create_model("mlp", (1, 8, 8), 10, widths=[64, 32])


def test_level_densities_follow_0_8_power_and_end_at_target():
    d = level_densities(0.1, 0.2)
    assert len(d) == math.ceil(math.log(0.1) / math.log(0.8))
    assert d[:-1] == pytest.approx([0.8 ** l for l in range(1, len(d))])
    assert d[-1] == 0.1
    assert level_densities(0.8 ** 3, 0.2) == pytest.approx([0.8, 0.64, 0.512])
    assert level_densities(0.5, 0.5) == [0.5]


def test_imp_rewinds_survivors_to_theta_k_and_prunes_by_trained_magnitude(trainer, tmp_path):
    model = _model()
    k = 7
    seen = []
    result = run_imp(model, trainer, 0.8 ** 3, rewind_step=k, store_dir=tmp_path / "imp",
                     on_level=lambda rec, mask: seen.append((rec.level, mask.kept)))
    assert [r.level for r in result.levels] == [0, 1, 2]
    total = result.mask.total
    assert result.mask.kept == round(0.8 ** 3 * total)
    assert seen[1][1] == round(0.8 * total) and seen[2][1] == round(0.64 * total)
    assert result.rewind.step == k

    # theta_k is the dense run's state at iteration k, taken independently.
    ref = trainer.fit(_model(), stop_at=k, eval_every_epoch=False).final_state
    for name, value in ref.model.items():
        assert torch.equal(result.rewind.model[name], value), name

    # The final mask keeps the largest |w| of the level-2 trained net among its survivors.
    level2 = torch.load(tmp_path / "imp" / "level_2" / "trained.pt", weights_only=True)
    # Global selection: every weight dropped at the last level is no larger than any survivor.
    all_kept = torch.cat([level2[n][m].abs() for n, m in result.mask.items()])
    prev = torch.load(tmp_path / "imp" / "level_2" / "mask.pt", weights_only=True)
    all_dropped = torch.cat([level2[n][prev[n] & ~m].abs() for n, m in result.mask.items()])
    assert all_dropped.max() <= all_kept.min()

    # Rewinding: a retrain started from the returned state begins at theta_k on every survivor.
    model.load_state_dict(result.rewind.model)
    result.mask.apply_(model)
    for name, p in model.named_parameters():
        if name in result.mask:
            m = result.mask[name]
            assert torch.equal(p.detach()[m], ref.model[name][m])
            assert torch.count_nonzero(p.detach()[~m]) == 0


def test_imp_levels_are_cached_and_resumed(trainer, tmp_path):
    store = tmp_path / "imp"
    first = run_imp(_model(), trainer, 0.8 ** 2, store_dir=store)
    assert not any(r.cached for r in first.levels)
    # Simulate a kill after level 0: drop level 1 and rerun to a deeper target.
    (store / "level_1" / "done.json").unlink()
    second = run_imp(_model(), trainer, 0.8 ** 3, store_dir=store)
    assert [r.cached for r in second.levels] == [True, False, False]
    assert second.levels[1].test_accuracy == pytest.approx(first.levels[1].test_accuracy)
    third = run_imp(_model(), trainer, 0.8 ** 3, store_dir=store)
    assert all(r.cached for r in third.levels)
    assert third.sample_passes == second.sample_passes  # a cached level still counts its recorded cost
    for n in first.mask:
        assert torch.equal(third.mask[n], second.mask[n])


def test_a_corrupt_level_checkpoint_names_the_file(trainer, tmp_path):
    from pruning.mask import CorruptArtifactError

    store = tmp_path / "imp"
    run_imp(_model(), trainer, 0.8, store_dir=store)
    (store / "level_0" / "trained.pt").write_bytes(b"garbage")
    with pytest.raises(CorruptArtifactError, match="level_0"):
        run_imp(_model(), trainer, 0.8, store_dir=store)
