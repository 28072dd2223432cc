import pytest
import torch

from distill import dm
from distill.artifact import DistilledSet, load_checkpoint
from distill.dm import dm_loss
from distill.methods import (
    DistillConfig,
    checkpoint_file,
    class_indices,
    distill_dataset,
    recipe_for,
    recipe_hash,
    sample_network,
    source_for,
)
from tests.clock import install

SMALL_NET = {"name": "convnet", "options": {"width": 16}}


def _cfg(**kw):
    base = dict(method="dm", ipc=2, iterations=30, batch_real=32, network=SMALL_NET, seed=0,
                checkpoint_every=3, progress_every=1, device="cpu")
    base.update(kw)
    return DistillConfig(**base)


def _held_out_dm_loss(data, ds, nets=4):
    """DM objective on fresh nets (not the ones used to distil), all real samples, no augmentation."""
    pools = class_indices(data)
    real = [data.train.x[p] for p in pools]
    syn = [ds.x[ds.y == c] for c in range(data.num_classes)]
    total = 0.0
    for k in range(nets):
        net = sample_network(_cfg().network, data, seed=10_000 + k).requires_grad_(False)
        with torch.no_grad():
            loss, _ = dm_loss(net, real, syn, lambda x, s: x, [0] * len(real))
        total += float(loss)
    return total / nets


def test_dm_reduces_the_matching_loss_and_yields_a_valid_artifact(digits, tmp_path, monkeypatch):
    # lr 10: the DM loss sums squared embedding differences, so it scales with the embedding size, and
    # this tiny net's 16-d embedding gives ~8x smaller pixel gradients than the default width-128 net.
    init = distill_dataset(digits, _cfg(iterations=0))
    seen = []
    clock = install(monkeypatch, dm)
    ds = distill_dataset(digits, _cfg(lr_images=10.0), progress=lambda i, m: seen.append((i, m["loss"])))
    measured = clock.span()  # before anything else reads the clock
    assert [i for i, _ in seen] == list(range(1, 31))
    assert not torch.equal(ds.x, init.x)
    assert _held_out_dm_loss(digits, ds) < 0.9 * _held_out_dm_loss(digits, init)
    assert ds.ipc == {c: 2 for c in range(10)}
    assert ds.normalization == digits.normalization and ds.recipe["method"] == "dm"
    n_real = sum(min(32, len(p)) for p in class_indices(digits))
    assert ds.cost["sample_passes"] == 30 * (n_real + 20)
    assert ds.cost["real_forward"] == 30 * n_real and ds.cost["wall_time_s"] == measured > 0
    ds.save(tmp_path / "dm.pt")
    assert torch.equal(DistilledSet.load(tmp_path / "dm.pt").x, ds.x)
    # synthetic inputs start from real samples of their own class
    rows = {tuple(r.tolist()): int(y) for r, y in zip(digits.train.x.flatten(1), digits.train.y)}
    assert all(rows[tuple(r.tolist())] == int(y) for r, y in zip(init.x.flatten(1), init.y))


class _Killed(RuntimeError):
    pass


def test_resume_continues_at_the_saved_iteration_and_matches_an_uninterrupted_run(digits, tmp_path):
    cfg = _cfg(iterations=8)
    straight = distill_dataset(digits, cfg)

    def kill_after_7(i, m):
        if i == 7:
            raise _Killed

    with pytest.raises(_Killed):
        distill_dataset(digits, cfg, progress=kill_after_7, checkpoint_dir=tmp_path)
    recipe = recipe_for(cfg, digits, options={"batched": True})
    source = source_for(digits)
    ckpt = checkpoint_file(tmp_path, recipe, source)
    assert load_checkpoint(ckpt, recipe_hash(recipe, source))["iteration"] == 6

    seen = []
    resumed = distill_dataset(digits, cfg, progress=lambda i, m: seen.append(i), checkpoint_dir=tmp_path)
    assert seen == [7, 8]
    assert torch.allclose(resumed.x, straight.x, atol=1e-6)
    assert resumed.content_hash == straight.content_hash
    assert resumed.cost["sample_passes"] == straight.cost["sample_passes"]
    # the finished run is now free to re-ask for
    seen.clear()
    again = distill_dataset(digits, cfg, progress=lambda i, m: seen.append(i), checkpoint_dir=tmp_path)
    assert seen == [] and torch.equal(again.x, resumed.x)
    # another recipe never picks up this checkpoint
    other = distill_dataset(digits, _cfg(iterations=8, seed=1), checkpoint_dir=tmp_path)
    assert not torch.allclose(other.x, straight.x)


def test_batched_and_per_class_forwards_agree(digits):
    a = distill_dataset(digits, _cfg(iterations=3))
    b = distill_dataset(digits, _cfg(iterations=3, options={"batched": False}))
    assert torch.allclose(a.x, b.x, atol=1e-5)


def test_dm_on_signals(mnist1d):
    cfg = DistillConfig(method="dm", ipc=2, iterations=3, batch_real=16, device="cpu",
                        network={"name": "conv1d", "options": {"width": 8}})
    ds = distill_dataset(mnist1d, cfg)
    assert ds.x.shape == (20, 1, 40) and ds.recipe["network"]["name"] == "conv1d"
    assert torch.isfinite(ds.x).all()
