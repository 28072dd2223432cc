import pytest
import torch

from distill.augment import IMAGE_OPS, SIGNAL_OPS, Augment, default_augment


def _images(n, seed):
    return torch.randn(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("op", list(IMAGE_OPS))
@pytest.mark.parametrize("mode", ["single", "all"])
def test_image_siamese_same_seed_same_transform_across_batch_sizes(op, mode):
    aug = Augment(op if mode == "single" else "color_crop_cutout_flip_scale_rotate", kind="image", mode=mode)
    real, syn = _images(7, 0), _images(3, 1)
    for seed in range(6):
        joint = aug(torch.cat([real, syn]), seed)
        assert torch.allclose(joint[:7], aug(real, seed), atol=1e-5)
        assert torch.allclose(joint[7:], aug(syn, seed), atol=1e-5)
        assert aug(syn, seed).shape == syn.shape


def test_image_different_seeds_differ_and_default_strategy_changes_inputs():
    aug = Augment()
    x = _images(4, 0)
    outs = [aug(x, s) for s in range(8)]
    assert any(not torch.allclose(outs[0], o) for o in outs[1:])
    assert sum(not torch.allclose(o, x) for o in outs) >= 6  # a flip/crop can be the identity only rarely


@pytest.mark.parametrize("kind,shape", [("image", (5, 1, 8, 8)), ("signal", (5, 1, 40))])
def test_gradient_reaches_inputs_for_every_op(kind, shape):
    ops = IMAGE_OPS if kind == "image" else SIGNAL_OPS
    for name in ops:
        aug = Augment(name, kind=kind)
        for seed in range(4):
            x = torch.randn(shape, requires_grad=True)
            out = aug(x, seed)
            assert out.shape == x.shape
            (out * torch.randn_like(out)).sum().backward()
            assert x.grad is not None and x.grad.abs().sum() > 0, (name, seed)


def test_signal_kind_siamese_and_default():
    aug = default_augment((1, 40))
    assert aug.kind == "signal"
    real, syn = torch.randn(9, 1, 40), torch.randn(2, 1, 40)
    outs = set()
    for seed in range(10):
        joint = aug(torch.cat([real, syn]), seed)
        assert torch.allclose(joint[:9], aug(real, seed), atol=1e-6)
        assert torch.allclose(joint[9:], aug(syn, seed), atol=1e-6)
        outs.add(round(float(aug(real, seed).sum()), 4))
    assert len(outs) > 3
    assert Augment("shift_stretch_scale_noise", kind="signal", mode="all")(real, 3).shape == real.shape


def test_augment_does_not_touch_global_rng():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    Augment(mode="all")(_images(2, 0), 5)
    Augment(kind="signal", mode="all")(torch.randn(2, 1, 40, generator=torch.Generator()), 5)
    assert torch.equal(torch.rand(3), expected)


def test_bad_strategy_and_shape_errors():
    with pytest.raises(ValueError, match="unknown image augmentation op"):
        Augment("color_wobble")
    with pytest.raises(ValueError, match="4-D"):
        Augment()(torch.randn(2, 1, 40), 0)
    assert torch.equal(Augment("none")(torch.ones(2, 1, 4, 4), 0), torch.ones(2, 1, 4, 4))
    assert default_augment((3, 32, 32)).kind == "image"


def _one_sample_views(aug, x, seed):
    """Each sample of the batch augmented inside the batch, and the same sample augmented with copies of
    sample 0 around it: equal rows mean the sample got sample 0's parameters."""
    out = aug(x, seed)
    same = aug(x[:1].expand_as(x).clone(), seed)
    return out, same


@pytest.mark.parametrize("kind,shape,ops", [("image", (6, 3, 16, 16), IMAGE_OPS), ("signal", (6, 1, 40), SIGNAL_OPS)])
def test_per_sample_draw_differs_within_a_batch_and_batch_draw_does_not(kind, shape, ops):
    x0 = torch.randn(shape[1:], generator=torch.Generator().manual_seed(3))
    batch = x0.expand(shape).clone()  # six copies of one sample: any difference comes from the parameters
    for name in ops:
        per_sample, shared = Augment(name, kind=kind, draw="sample"), Augment(name, kind=kind)
        differ = 0
        for seed in range(5):
            out = per_sample(batch, seed)
            assert out.shape == batch.shape
            differ += not all(torch.allclose(out[0], out[i], atol=1e-6) for i in range(1, len(out)))
            s = shared(batch, seed)
            assert all(torch.allclose(s[0], s[i], atol=1e-6) for i in range(1, len(s))), name
        assert differ >= 4, f"{name}: per-sample draws gave every sample the same transform"


def test_per_sample_draw_is_seeded_and_differentiable():
    aug = Augment("shift_stretch_scale_noise", kind="signal", mode="all", draw="sample")
    x = torch.randn(5, 1, 40, requires_grad=True)
    assert torch.equal(aug(x, 7), aug(x, 7))
    assert not torch.equal(aug(x, 7), aug(x, 8))
    aug(x, 7).pow(2).sum().backward()
    assert x.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="draw"):
        Augment(draw="pixel")
