import math

import pytest
import torch

from distill import dc as dc_module
from distill.artifact import DistilledSet
from distill.dc import DCOptions, dc_loops, layer_distance, match_loss, resolve_dc_options
from distill.methods import DistillConfig, distill_dataset, recipe_hash
from tests.clock import install

TINY_NET = {"name": "convnet", "options": {"width": 8, "depth": 2}}


def _cfg(method="dc", **overrides):
    settings = dict(
        method=method, ipc=2, iterations=2, lr_images=0.1, batch_real=16, device="cpu", network=TINY_NET,
        options={"outer_loop": 2, "inner_loop": 2}, progress_every=1,
    )
    settings.update(overrides)
    return DistillConfig(**settings)


# ------------------------------------------------------------------------------------------ distance
def test_layer_distance_zero_for_identical_and_rescaled_gradients():
    gen = torch.Generator().manual_seed(0)
    for shape in [(4, 3, 3, 3), (5, 7), (6, 2, 5)]:
        g = torch.randn(shape, generator=gen)
        assert abs(float(layer_distance(g, g.clone()))) < 1e-5
        # cosine per output row: positive rescaling of the whole gradient changes nothing
        assert abs(float(layer_distance(g, 3.0 * g))) < 1e-5
    bias = torch.randn(7, generator=gen)
    assert float(layer_distance(bias, -bias)) == 0.0  # 1-D parameters are skipped, as in the paper's code


def test_layer_distance_matches_hand_computation():
    real = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    syn = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    # row 0: identical -> 1 - 1/(1 + eps); row 1: (0,1).(1,1) = 1, norms 1 and sqrt(2)
    expected = (1 - 1 / (1 + 1e-6)) + (1 - 1 / (math.sqrt(2) + 1e-6))
    assert float(layer_distance(real, syn)) == pytest.approx(expected, rel=1e-6)
    # a conv-shaped gradient is compared per output channel over (in, kh, kw)
    assert float(layer_distance(real.view(2, 1, 1, 2), syn.view(2, 1, 1, 2))) == pytest.approx(expected, rel=1e-6)
    # opposite rows are the maximal distance 2 each
    assert float(layer_distance(real, -real)) == pytest.approx(4.0, rel=1e-5)
    # match_loss sums over parameters; the bias term adds nothing
    total = match_loss([real, torch.ones(2)], [syn, torch.zeros(2)])
    assert float(total) == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="shapes differ"):
        layer_distance(real, syn.view(1, 4))


def test_layer_distance_is_differentiable_in_the_synthetic_gradient():
    real = torch.randn(3, 4)
    syn = torch.randn(3, 4, requires_grad=True)
    layer_distance(real, syn).backward()
    assert syn.grad is not None and syn.grad.abs().sum() > 0


# ------------------------------------------------------------------------------------------ options
def test_loops_follow_the_reference_table_and_options_override():
    assert dc_loops(1) == (1, 1)
    assert dc_loops(10) == (10, 50)
    assert dc_loops(50) == (50, 10)
    assert dc_loops(2) == (2, 50)
    assert dc_loops(25) == (25, 20)
    assert dc_loops(100) == (50, 10)
    resolved = resolve_dc_options(DCOptions(inner_loop=3), ipc=10)
    assert (resolved.outer_loop, resolved.inner_loop) == (10, 3)


def test_unknown_option_fails_naming_the_method(digits):
    with pytest.raises(ValueError, match="'dsa'.*options.inner_steps"):
        distill_dataset(digits, _cfg("dsa", options={"inner_steps": 3}))


# ------------------------------------------------------------------------------------------ end to end
@pytest.mark.parametrize("method,norm", [("dc", "instance"), ("dsa", "instance"), ("dc", "batch")])
def test_end_to_end_valid_artifact(digits, tmp_path, method, norm, monkeypatch):
    net = {"name": "convnet", "options": {"width": 8, "depth": 2, "norm": norm}}
    records = []
    clock = install(monkeypatch, dc_module)
    ds = distill_dataset(digits, _cfg(method, network=net), progress=lambda i, m: records.append((i, m)),
                         checkpoint_dir=tmp_path / "ckpt")
    measured = clock.span()  # before anything else reads the clock
    init = distill_dataset(digits, _cfg(method, network=net, iterations=0))

    assert ds.x.shape == (20, 1, 8, 8) and ds.input_shape == (1, 8, 8)
    assert torch.equal(ds.y, torch.arange(10).repeat_interleave(2))
    assert torch.isfinite(ds.x).all()
    assert not torch.allclose(ds.x, init.x)  # the second-order matching gradient reached the pixels
    assert ds.recipe["method"] == method
    assert ds.recipe["options"] == {"outer_loop": 2, "inner_loop": 2, "lr_net": 0.01, "batch_train": 256,
                                    "bn_size_pc": 16}
    assert ds.content_hash == recipe_hash(ds.recipe, ds.source) == ds.expected_hash()
    assert ds.normalization == digits.normalization
    assert [i for i, _ in records] == [1, 2] and all(math.isfinite(m["loss"]) for _, m in records)

    # 2 iterations x 2 outer steps x 10 classes x 16 real; 2 x 2 x 20 synthetic; 2 x 1 x 2 inner epochs x 20
    counts = ds.cost
    assert counts["real_forward_backward"] == 2 * 2 * 10 * 16
    assert counts["synthetic_match_second_order"] == 2 * 2 * 20
    assert counts["synthetic_inner_train"] == 2 * 1 * 2 * 20
    assert counts["real_bn_forward"] == (2 * 2 * 10 * 16 if norm == "batch" else 0)
    assert counts["sample_passes"] > 0 and counts["wall_time_s"] == measured > 0
    assert counts["sample_passes"] == sum(v for k, v in counts.items() if k not in ("sample_passes", "wall_time_s"))

    ds.save(tmp_path / "set.pt")
    back = DistilledSet.load(tmp_path / "set.pt")
    assert torch.equal(back.x, ds.x) and torch.equal(back.y, ds.y)
    assert (back.recipe, back.source, back.cost, back.content_hash) == (ds.recipe, ds.source, ds.cost, ds.content_hash)
    assert list((tmp_path / "ckpt").glob(f"{method}-*.ckpt.pt"))


def test_dsa_and_dc_differ_and_dsa_is_siamese(digits, monkeypatch):
    calls = []
    real_make_augment = dc_module.make_augment

    def recording_make_augment(cfg, shape):
        aug = real_make_augment(cfg, shape)

        def wrapped(x, seed):
            calls.append((seed, len(x)))
            return aug(x, seed)

        return wrapped

    monkeypatch.setattr(dc_module, "make_augment", recording_make_augment)
    opts = {"outer_loop": 1, "inner_loop": 0}  # matching only: every augment call is a real/synthetic pair
    dsa = distill_dataset(digits, _cfg("dsa", iterations=1, options=opts))
    assert len(calls) == 2 * 10
    for (seed_real, n_real), (seed_syn, n_syn) in zip(calls[0::2], calls[1::2]):
        assert seed_real == seed_syn and (n_real, n_syn) == (16, 2)
    assert len({seed for seed, _ in calls}) == 10  # one transform per class

    calls.clear()
    dc = distill_dataset(digits, _cfg("dc", iterations=1, options=opts))
    assert calls == []  # plain DC never augments
    assert not torch.allclose(dc.x, dsa.x)


def test_resume_after_interruption_reproduces_the_uninterrupted_run(digits, tmp_path):
    full = distill_dataset(digits, _cfg("dsa", iterations=3))

    class Stop(Exception):
        pass

    def stop_at_two(iteration, metrics):
        if iteration == 2:
            raise Stop

    with pytest.raises(Stop):
        distill_dataset(digits, _cfg("dsa", iterations=3, checkpoint_every=1), progress=stop_at_two,
                        checkpoint_dir=tmp_path)
    seen = []
    resumed = distill_dataset(digits, _cfg("dsa", iterations=3, checkpoint_every=1),
                              progress=lambda i, m: seen.append(i), checkpoint_dir=tmp_path)
    # progress at 2 ran before that iteration's checkpoint was written: the run resumed after iteration 1
    assert seen == [2, 3]
    assert torch.allclose(resumed.x, full.x, atol=1e-6)
    assert resumed.cost["sample_passes"] == full.cost["sample_passes"]
    assert resumed.content_hash == full.content_hash
