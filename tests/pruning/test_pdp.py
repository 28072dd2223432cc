"""PDP (train-time differentiable pruning): thresholds, soft forward/backward, schedules, exact hard masks."""
from __future__ import annotations


import pydantic
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from pruning.mask import prunable_parameters
from pruning.pdp import (
    PDPConfig,
    PDPMask,
    group_thresholds,
    magnitude_threshold,
    ramp_fraction,
    run_pdp,
    warmup_epochs,
)
from training.data import DataConfig, load_dataset
from training.models import create_model
from training.trainer import TrainConfig, Trainer

EPOCHS = 4


@pytest.fixture(scope="module")
def digits():
    torch.set_num_threads(1)
    return load_dataset(DataConfig(name="digits"))


def _model(data, seed=0):
    torch.manual_seed(seed)
    # conv weights: features.0 (16, 1, 3, 3) fan-in 9, features.3 (16, 16, 3, 3) fan-in 144; fc (10, 64)
    return create_model("convnet", data.input_shape, data.num_classes, width=16, depth=2, norm="none")


def _trainer(data, epochs=EPOCHS):
    cfg = TrainConfig(epochs=epochs, batch_size=64, optimizer="adam", lr=1e-2, weight_decay=0, device="cpu")
    return Trainer(cfg, data, seed=0)


# --------------------------------------------------------------------------------------------- thresholds
def test_threshold_is_midpoint_of_adjacent_magnitudes():
    w = torch.tensor([0.1, -0.5, 0.3, -0.05, 0.9, 0.2])
    # keep 3 (r = 0.5): kept 0.9, 0.5, 0.3; pruned 0.2, 0.1, 0.05 -> t = (0.3 + 0.2) / 2
    assert magnitude_threshold(w.abs(), 3).item() == pytest.approx(0.25)
    pm = PDPMask("unstructured", tau=1e-3, tau_mode="absolute", units=w.numel())
    pm.keep = 3
    m = pm.soft_mask(w)
    assert torch.equal(m > 0.5, torch.tensor([False, True, True, False, True, False]))

    gen = torch.Generator().manual_seed(1)
    w = torch.randn(7, 11, generator=gen)
    s = w.abs().flatten().sort().values
    for r in (0.1, 0.5, 0.9):
        keep = round((1 - r) * w.numel())
        n_pruned = w.numel() - keep
        t = magnitude_threshold(w.abs(), keep)
        assert t.item() == pytest.approx(0.5 * (s[n_pruned - 1] + s[n_pruned]).item())
        pm.units, pm.keep = w.numel(), keep
        kept = pm.soft_mask(w) > 0.5
        assert int(kept.sum()) == keep
        assert torch.equal(kept, w.abs() > t)


def test_group_thresholds_nm():
    g = torch.tensor([[0.4, 0.1, 0.3, 0.2], [1.0, 4.0, 3.0, 2.0]])
    # 2:4 -> midpoint of the 2nd and 3rd largest; 1:4 -> of the 1st and 2nd
    assert torch.allclose(group_thresholds(g, 2), torch.tensor([0.25, 2.5]))
    assert torch.allclose(group_thresholds(g, 1), torch.tensor([0.35, 3.5]))


# --------------------------------------------------------------------------------------------- soft forward
@pytest.mark.parametrize("tau_mode,tau", [("absolute", 1e-2), ("relative", 0.5)])
def test_soft_forward_and_gradient_match_explicit_formula(tau_mode, tau):
    torch.manual_seed(0)
    lin = nn.Linear(6, 4)
    pm = PDPMask("unstructured", tau=tau, tau_mode=tau_mode, units=lin.weight.numel())
    pm.keep = 10
    w0 = lin.weight.detach().clone().requires_grad_(True)
    b0 = lin.bias.detach().clone()
    parametrize.register_parametrization(lin, "weight", pm)
    x = torch.randn(5, 6)

    s = w0.detach().abs().flatten().sort().values
    t = 0.5 * (s[w0.numel() - 10 - 1] + s[w0.numel() - 10])  # a constant: no gradient through t
    tau_eff = tau * t * t if tau_mode == "relative" else tau
    m = torch.sigmoid((w0 * w0 - t * t) / tau_eff)
    ref = x @ (w0 * m).T + b0
    out = lin(x)
    assert torch.allclose(out, ref, atol=1e-6)

    (ref ** 2).sum().backward()
    (out ** 2).sum().backward()
    grad = lin.parametrizations.weight.original.grad
    assert torch.allclose(grad, w0.grad, atol=1e-5)
    assert grad.abs().sum() > 0

    # d(w m(w))/dw = m + 2 w^2 m (1 - m) / tau: the paper's boost near the threshold
    lin.parametrizations.weight.original.grad = None
    lin.weight.sum().backward()
    wd = w0.detach()
    md = m.detach()
    expected = md + 2 * wd * wd * md * (1 - md) / tau_eff
    assert torch.allclose(lin.parametrizations.weight.original.grad, expected, atol=1e-4, rtol=1e-4)


def test_soft_forward_channel_and_nm_formulas():
    torch.manual_seed(0)
    w = torch.randn(6, 3, 4)
    tau = 1e-2
    ch = PDPMask("channel", tau=tau, tau_mode="absolute", units=6)
    ch.keep = 4
    ms = (w * w).flatten(1).mean(1)
    rms = ms.sqrt().sort().values
    t = 0.5 * (rms[1] + rms[2])
    ref = w * torch.sigmoid((ms - t * t) / tau).view(-1, 1, 1)
    assert torch.allclose(ch(w), ref, atol=1e-6)

    nm = PDPMask("nm", tau=tau, tau_mode="absolute", units=4, m=4)
    nm.keep = 2
    g = w.reshape(-1, 4)
    top = g.abs().sort(dim=1, descending=True).values
    tg = (0.5 * (top[:, 1] + top[:, 2])).unsqueeze(1)
    ref = (g * torch.sigmoid((g * g - tg * tg) / tau)).view_as(w)
    assert torch.allclose(nm(w), ref, atol=1e-6)
    nm.keep = 4  # M of M kept: dense, identity
    assert nm(w) is w


# --------------------------------------------------------------------------------------------- schedule
def test_ramp_schedule():
    cfg = PDPConfig()
    # long run: the paper's epsilon is used as is (s = 32, full target after 1/0.015 -> 67 epochs)
    assert warmup_epochs(cfg, 200) == 32
    assert ramp_fraction(cfg, 200, 31) == 0.0
    assert ramp_fraction(cfg, 200, 32) == pytest.approx(0.015)
    assert ramp_fraction(cfg, 200, 97) < 1.0 and ramp_fraction(cfg, 200, 98) == 1.0
    # short run: epsilon grows so that the target is reached by 80 % of the epochs
    assert warmup_epochs(cfg, 10) == 2
    rhos = [ramp_fraction(cfg, 10, e) for e in range(10)]
    assert rhos[:2] == [0.0, 0.0]
    assert all(a < b for a, b in zip(rhos[1:8], rhos[2:8]))
    assert rhos[7:] == [1.0, 1.0, 1.0]
    assert ramp_fraction(cfg, 1, 0) == 1.0


def test_config_validation():
    with pytest.raises(pydantic.ValidationError):
        PDPConfig(temperature=1.0)
    with pytest.raises(pydantic.ValidationError):
        PDPConfig(structure="nm", n=4, m=4)
    with pytest.raises(pydantic.ValidationError):
        PDPConfig(tau=0)


def test_nm_argument_errors(digits):
    model = _model(digits)
    with pytest.raises(ValueError, match="fixes the sparsity"):
        run_pdp(model, _trainer(digits), 0.9, PDPConfig(structure="nm", n=2, m=4))
    torch.manual_seed(0)
    mlp = create_model("mlp", digits.input_shape, 10, widths=[10])  # fan-ins 64 and 10
    with pytest.raises(ValueError, match="divisible by M=3"):
        run_pdp(mlp, _trainer(digits), None, PDPConfig(structure="nm", n=1, m=3))


# --------------------------------------------------------------------------------------------- end to end
def test_unstructured_exact_sparsity_clean_model_no_global_patching(digits):
    model = _model(digits)
    keys_before = set(model.state_dict())
    types_before = {n: type(m) for n, m in model.named_modules()}
    originals = {
        "F.linear": F.linear, "F.conv2d": F.conv2d, "F.conv1d": F.conv1d, "torch.sigmoid": torch.sigmoid,
        "Linear.forward": nn.Linear.forward, "Conv2d.forward": nn.Conv2d.forward,
    }
    current = lambda: {  # noqa: E731
        "F.linear": F.linear, "F.conv2d": F.conv2d, "F.conv1d": F.conv1d, "torch.sigmoid": torch.sigmoid,
        "Linear.forward": nn.Linear.forward, "Conv2d.forward": nn.Conv2d.forward,
    }
    seen = []

    def during(record):
        # mid-training: per-module parametrizations are in place, nothing global is touched
        assert all(current()[k] is v for k, v in originals.items())
        assert parametrize.is_parametrized(model.features[3], "weight")
        seen.append(record["pdp_target_sparsity"])

    target = 0.8
    res = run_pdp(model, _trainer(digits), target, PDPConfig(), on_epoch=during)

    total = sum(p.numel() for p in prunable_parameters(model).values())
    assert res.mask.total == total
    assert res.mask.kept == round((1 - target) * total)
    assert sum(res.kept_units.values()) == res.mask.kept
    assert seen[0] == 0.0 and seen[-1] == pytest.approx(target, abs=1e-3)
    assert all(a <= b for a, b in zip(seen, seen[1:]))

    # parametrizations gone: plain modules, plain parameters, the original state-dict keys
    assert all(current()[k] is v for k, v in originals.items())
    assert {n: type(m) for n, m in model.named_modules()} == types_before
    assert not any(parametrize.is_parametrized(m) for m in model.modules())
    assert set(model.state_dict()) == keys_before == set(res.trained_state)
    assert all(not m._forward_pre_hooks and not m._forward_hooks for m in model.modules())

    params = dict(model.named_parameters())
    for name, m in res.mask.items():
        assert isinstance(params[name], nn.Parameter)
        assert torch.all(res.trained_state[name][~m] == 0)
        assert torch.all(params[name].detach()[~m] == 0)
        assert torch.all(res.trained_state[name][m] != 0)
    # the reported accuracy is the hard-masked net's
    assert res.test_accuracy == _trainer(digits).evaluate(model, digits.test).accuracy
    assert res.test_accuracy > 0.5
    assert res.sample_passes == EPOCHS * len(digits.train)
    assert not res.collapsed


@pytest.mark.parametrize("n,m", [(2, 4), (1, 4)])
def test_nm_final_mask_pattern(digits, n, m):
    model = _model(digits)
    res = run_pdp(model, _trainer(digits), None, PDPConfig(structure="nm", n=n, m=m))
    # features.0 has fan-in 9: not divisible by 4, kept dense and reported
    assert res.skipped == ["features.0.weight"]
    assert bool(res.mask["features.0.weight"].all())
    for name in ("features.3.weight", "fc.weight"):
        groups = res.mask[name].reshape(-1, m)
        assert torch.all(groups.sum(1) == n), name
        w = res.trained_state[name].reshape(-1, m)
        assert torch.all((w != 0).sum(1) == n)
    assert res.test_accuracy > 0.3


def test_channel_final_mask_drops_whole_filters(digits):
    model = _model(digits)
    target = 0.5
    res = run_pdp(model, _trainer(digits), target, PDPConfig(structure="channel"), ignore=("fc.weight",))
    assert "fc.weight" not in res.mask
    pruned_weights = 0
    for name, mask in res.mask.items():
        rows = mask.flatten(1)
        assert torch.all(rows.all(1) | ~rows.any(1)), name  # each filter all kept or all dropped
        kept_channels = int(rows.all(1).sum())
        assert kept_channels == res.kept_units[name]
        w = res.trained_state[name].flatten(1)
        assert torch.all(w[~rows.all(1)] == 0)
        pruned_weights += (mask.shape[0] - kept_channels) * rows.shape[1]
    total = res.mask.total
    assert pruned_weights == total - res.mask.kept
    fan_in_max = max(m[0].numel() for m in res.mask.values())
    assert abs(pruned_weights - target * total) <= fan_in_max / 2 + 1e-9
    assert res.test_accuracy > 0.3


# --------------------------------------------------------------------------------------------- heads
def test_head_soft_mask_is_one_value_per_head_across_q_k_v():
    """Every projection of a head gets sigmoid((ms_h - t^2)/tau), ms_h the mean square of the head's rows
    in q, k and v together and t the midpoint of the keep-th and next head RMS (by hand below)."""
    gen = torch.Generator().manual_seed(0)
    heads, dh, d = 4, 3, 6
    q, k, v = (nn.Parameter(torch.randn(heads * dh, d, generator=gen) * s) for s in (1.0, 0.5, 2.0))
    ms = torch.stack([(torch.cat([x.detach()[h * dh:(h + 1) * dh] for x in (q, k, v)]) ** 2).mean()
                      for h in range(heads)])
    rms = ms.sqrt().sort(descending=True).values
    t = (rms[1] + rms[2]) / 2  # keep 2 heads
    want = torch.sigmoid((ms - t * t) / 1e-2).repeat_interleave(dh)
    for w, partners in ((q, (k, v)), (k, (q, v)), (v, (q, k))):
        pm = PDPMask("head", tau=1e-2, tau_mode="absolute", units=heads, partners=partners)
        pm.keep = 2
        torch.testing.assert_close(pm.soft_mask(w).flatten(), want, rtol=1e-5, atol=1e-6)


def test_head_structure_drops_whole_heads_that_the_export_removes(digits):
    from pruning.export import export_channel_pruned

    torch.manual_seed(0)
    model = create_model("vit", digits.input_shape, digits.num_classes, dim=32, heads=4, depth=2, patch_size=4)
    res = run_pdp(model, _trainer(digits, epochs=3), 0.5, PDPConfig(structure="head"), ignore=("fc.weight",))
    dropped = 0
    for b in range(2):
        alive = [res.mask[f"blocks.{b}.attn.{p}.weight"].any(1).reshape(4, 8).any(1) for p in ("q", "k", "v")]
        assert torch.equal(alive[0], alive[1]) and torch.equal(alive[0], alive[2])  # the same heads everywhere
        for p in ("q", "k", "v"):  # each head all kept or all dropped
            rows = res.mask[f"blocks.{b}.attn.{p}.weight"].reshape(4, -1)
            assert torch.all(rows.all(1) | ~rows.any(1))
        assert int(alive[0].sum()) == res.kept_units[f"blocks.{b}.attn.q.weight"] >= 1
        dropped += 4 - int(alive[0].sum())
    mlp = res.mask["blocks.0.mlp.0.weight"].flatten(1)
    assert torch.all(mlp.all(1) | ~mlp.any(1))  # the other layers: whole channels
    assert abs(res.report.sparsity - 0.5) < 0.1
    trained = create_model("vit", digits.input_shape, digits.num_classes, dim=32, heads=4, depth=2, patch_size=4)
    trained.load_state_dict(res.trained_state)
    exported = export_channel_pruned(trained, res.mask, digits.train.x[:8])
    assert sum(4 - blk.attn.heads for blk in exported.blocks) == dropped


def test_head_structure_needs_attention_and_whole_heads(digits):
    with pytest.raises(ValueError, match="attention"):
        run_pdp(_model(digits), _trainer(digits), 0.5, PDPConfig(structure="head"))
    torch.manual_seed(0)
    vit = create_model("vit", digits.input_shape, digits.num_classes, dim=16, heads=2, depth=1, patch_size=4)
    with pytest.raises(ValueError, match="a head spans q, k and v"):
        run_pdp(vit, _trainer(digits), 0.5, PDPConfig(structure="head"), ignore=("blocks.0.attn.k.weight",))
