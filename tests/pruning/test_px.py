"""PX: the explicit path sum, max-pool and norm gating, the NTK-trace bound, hooks, variants, pruning."""
from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pruning.at_init import prune_at_init
from pruning.mask import Mask, prunable_parameters
from pruning.scorers import SCORERS, ScoringBatches
from pruning.scorers.px import PXScorer, _norm_affine
from training.models import create_model

F64 = torch.float64
ORIGINAL_RELU = F.relu


def _batches(x: torch.Tensor, num_classes: int = 2, batch_size: int = 256) -> ScoringBatches:
    y = torch.arange(len(x)) % num_classes
    return ScoringBatches(x, y, tuple(x.shape[1:]), num_classes, batch_size=batch_size)


def _score(model, x, mask=None, variant="clean", batch_size=256):
    params = prunable_parameters(model)
    mask = mask if mask is not None else Mask.ones(model)
    return PXScorer(variant=variant).score(model, params, mask, _batches(x, batch_size=batch_size))


def test_registered_and_variants():
    assert SCORERS.get("px") is PXScorer
    assert PXScorer.default_rounds == 100 and PXScorer.needs_data
    assert PXScorer().variant == "clean"
    assert PXScorer(seed=3, variant="official").variant == "official"
    with pytest.raises(ValueError, match="(?s)variant.*'clean' or 'official'"):
        PXScorer(variant="exact")


# ------------------------------------------------------------------------------- explicit path sum
def _tiny_mlp() -> nn.Module:
    return nn.Sequential(
        nn.Linear(3, 4, bias=False), nn.ReLU(), nn.Linear(4, 3, bias=False), nn.ReLU(), nn.Linear(3, 2, bias=False)
    ).to(F64)


def _path_sum_scores(model: nn.Module, mask: Mask, xs: torch.Tensor) -> list[torch.Tensor]:
    """score_j = sum_x sum_k z1_k(x) * sum_{p through j, p -> k} v_p^2, by enumerating every path."""
    w1, w2, w3 = (model[i].weight.detach() for i in (0, 2, 4))
    m1, m2, m3 = (mask[f"{i}.weight"].to(F64) for i in (0, 2, 4))
    s1, s2, s3 = torch.zeros_like(w1), torch.zeros_like(w2), torch.zeros_like(w3)
    paths = list(itertools.product(range(3), range(4), range(3), range(2)))  # (i, h1, h2, k)
    for x in xs:
        g1 = (w1 @ x) > 0
        g2 = (w2 @ torch.relu(w1 @ x)) > 0
        z1 = torch.zeros(2, dtype=F64)
        for i, a, b, k in paths:  # path activation: all units active, all edges unpruned
            z1[k] += g1[a] * g2[b] * m1[a, i] * m2[b, a] * m3[k, b] * x[i] ** 2
        for i, a, b, k in paths:
            v_sq = (w1[a, i] * w2[b, a] * w3[k, b]) ** 2
            s1[a, i] += z1[k] * v_sq
            s2[b, a] += z1[k] * v_sq
            s3[k, b] += z1[k] * v_sq
    return [s1, s2, s3]


@pytest.mark.parametrize("pruned", [False, True])
def test_clean_matches_explicit_path_sum(pruned):
    torch.manual_seed(0)
    model = _tiny_mlp()
    xs = torch.randn(6, 3, dtype=F64)
    mask = Mask.ones(model)
    if pruned:
        mask = Mask({n: torch.rand(m.shape) > 0.3 for n, m in mask.items()})
        mask.apply_(model)
    expected = _path_sum_scores(model, mask, xs)
    scores = _score(model, xs, mask, batch_size=4)  # two batches: gradients accumulate
    assert list(scores) == ["0.weight", "2.weight", "4.weight"]
    for (name, s), e in zip(scores.items(), expected):
        assert s.dtype == F64
        torch.testing.assert_close(s, e, rtol=1e-12, atol=1e-14, msg=name)
        if pruned:
            assert (s[~mask[name]] == 0).all()


# ------------------------------------------------------------------------------- max-pool routing
class _PoolNet(nn.Module):
    """conv -> max-pool -> ReLU (no ties at the pool) -> conv -> ReLU -> fc, bias-free."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 3, 3, padding=1, bias=False)
        self.pool = nn.MaxPool2d(2)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(3, 2, 3, padding=1, bias=False)
        self.relu2 = nn.ReLU()
        self.fc = nn.Linear(2 * 3 * 3, 3, bias=False)

    def forward(self, x):
        x = self.relu1(self.pool(self.conv1(x)))
        return self.fc(self.relu2(self.conv2(x)).flatten(1))


def _select(v: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
    """Take the marked position of each 2x2 window, written without pooling indices."""
    return F.avg_pool2d(v * onehot, 2) * 4


def test_max_pool_follows_real_argmax_in_both_copies():
    torch.manual_seed(1)
    model = _PoolNet().to(F64)
    xs = torch.randn(5, 2, 6, 6, dtype=F64)
    w1, w2, w3 = (model.conv1.weight.detach(), model.conv2.weight.detach(), model.fc.weight.detach())
    leaves = [(w * w).requires_grad_() for w in (w1, w2, w3)]
    r = 0
    for x in xs.split(1):
        h = F.conv2d(x, w1, padding=1)
        onehot = (h == F.interpolate(F.max_pool2d(h, 2), scale_factor=2, mode="nearest")).to(F64)
        assert int(onehot.sum()) == h.numel() // 4  # no ties: one winner per window
        g1 = _select(h, onehot) > 0
        g2 = F.conv2d(torch.relu(_select(h, onehot)), w2, padding=1) > 0
        with torch.no_grad():
            a = F.conv2d(x * x, torch.ones_like(w1), padding=1)
            a = _select(a, onehot) * g1
            a = F.conv2d(a, torch.ones_like(w2), padding=1) * g2
            z1 = a.flatten(1) @ torch.ones_like(w3).T
        b = F.conv2d(torch.ones_like(x), leaves[0], padding=1)
        b = F.conv2d(_select(b, onehot), leaves[1], padding=1)
        z2 = b.flatten(1) @ leaves[2].T
        r = r + (z1 * z2).sum()
    grads = torch.autograd.grad(r, leaves)
    expected = [leaf.detach() * g for leaf, g in zip(leaves, grads)]
    scores = _score(model, xs, batch_size=2)
    for (name, s), e in zip(scores.items(), expected):
        torch.testing.assert_close(s, e, rtol=1e-11, atol=1e-14, msg=name)


def _conv_stack(pool: bool) -> nn.Module:
    layers = [nn.Conv2d(2, 3, 3, padding=1), nn.ReLU()]
    if pool:
        layers.append(nn.MaxPool2d(1))  # routes every position to itself: an identity
    layers += [nn.Conv2d(3, 2, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 5 * 5, 3)]
    return nn.Sequential(*layers).to(F64)


def test_per_example_z2_equals_shared_z2_when_routing_is_trivial():
    """A 1x1 max-pool forces the per-example z2 path; it must give what the shared-z2 shortcut gives."""
    torch.manual_seed(2)
    plain = _conv_stack(pool=False)
    pooled = _conv_stack(pool=True)
    with torch.no_grad():
        for a, b in zip([m for m in plain if isinstance(m, (nn.Conv2d, nn.Linear))],
                        [m for m in pooled if isinstance(m, (nn.Conv2d, nn.Linear))]):
            b.weight.copy_(a.weight)
            b.bias.copy_(a.bias)
    xs = torch.randn(7, 2, 5, 5, dtype=F64)
    s_plain, s_pooled = _score(plain, xs, batch_size=3), _score(pooled, xs, batch_size=3)
    for a, b in zip(s_plain.values(), s_pooled.values()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=0)


class _SharedRelu(nn.Module):
    """One ReLU module called twice per forward (torchvision style)."""

    def __init__(self, separate: bool) -> None:
        super().__init__()
        self.l1 = nn.Linear(4, 5)
        self.l2 = nn.Linear(5, 4)
        self.fc = nn.Linear(4, 2)
        self.relu = nn.ReLU()
        self.relu_b = nn.ReLU() if separate else self.relu

    def forward(self, x):
        return self.fc(self.relu_b(self.l2(self.relu(self.l1(x)))))


def test_module_called_twice_replays_in_call_order():
    torch.manual_seed(3)
    shared = _SharedRelu(separate=False).to(F64)
    separate = _SharedRelu(separate=True).to(F64)
    separate.load_state_dict(shared.state_dict())
    xs = torch.randn(6, 4, dtype=F64)
    a, b = _score(shared, xs), _score(separate, xs)
    for n in a:
        torch.testing.assert_close(a[n], b[n], rtol=1e-12, atol=0)


# ------------------------------------------------------------------------------- the NTK-trace bound
def _bound_net(bn: bool) -> nn.Module:
    norm = [nn.BatchNorm2d(4)] if bn else []
    net = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), *norm, nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 3, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 3),
    ).to(F64)
    with torch.no_grad():
        for m in net:
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(-1.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.bias.uniform_(-0.1, 0.5)  # mostly positive: units stay alive even for tiny inputs
    return net.eval()


@pytest.mark.parametrize("bn, input_scale", [(True, 1.0), (False, 1.0), (False, 1e-3)])
def test_clean_bounds_the_ntk_trace_per_weight_with_biases_bn_and_max_pool(bn, input_scale):
    """theta_j^2 * sum_x sum_k (df_k/dtheta_j)^2 <= score_j: the inequality PX is built on.

    Holds with biases (bias paths are paths), eval-mode BN (an affine map) and max-pool routing. With tiny
    inputs the gradients come almost only from bias paths, so dropping biases from z1/z2 breaks the bound.
    """
    torch.manual_seed(4)
    net = _bound_net(bn)
    xs = torch.randn(4, 2, 6, 6, dtype=F64) * input_scale
    params = prunable_parameters(net)
    jac_sq = {n: torch.zeros_like(p) for n, p in params.items()}
    for x in xs.split(1):
        out = net(x)[0]
        for k in range(out.numel()):
            grads = torch.autograd.grad(out[k], list(params.values()), retain_graph=True)
            for n, g in zip(params, grads):
                jac_sq[n] += g * g
    scores = _score(net, xs)
    for n, p in params.items():
        lhs = p.detach() ** 2 * jac_sq[n]
        assert (lhs <= scores[n] * (1 + 1e-9) + 1e-300).all(), n
        assert lhs.sum() > 0


def test_eval_batchnorm_scores_equal_those_of_the_folded_net():
    """Clean variant: eval-mode BN after a bias-free conv is the conv with weights s*W and bias t."""
    torch.manual_seed(10)

    def build(bn: bool) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(2, 4, 3, padding=1, bias=not bn), *([nn.BatchNorm2d(4)] if bn else []), nn.ReLU(),
            nn.Conv2d(4, 3, 3, padding=1, bias=not bn), *([nn.BatchNorm2d(3)] if bn else []), nn.ReLU(),
            nn.Flatten(), nn.Linear(3 * 4 * 4, 2, bias=False),
        ).to(F64).eval()

    net, folded = build(True), build(False)
    convs = [m for m in net if isinstance(m, nn.Conv2d)]
    bns = [m for m in net if isinstance(m, nn.BatchNorm2d)]
    fconvs = [m for m in folded if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        for conv, bn, fconv in zip(convs, bns, fconvs):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(-1.5, 1.5)
            bn.bias.uniform_(-0.5, 0.5)
            s = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            fconv.weight.copy_(conv.weight * s.view(-1, 1, 1, 1))
            fconv.bias.copy_(bn.bias - s * bn.running_mean)
        folded[-1].weight.copy_(net[-1].weight)
    xs = torch.randn(5, 2, 4, 4, dtype=F64)
    torch.testing.assert_close(net(xs), folded(xs), rtol=1e-12, atol=1e-12)
    a, b = _score(net, xs), _score(folded, xs)
    for (na, sa), (nb, sb) in zip(a.items(), b.items()):
        torch.testing.assert_close(sa, sb, rtol=1e-9, atol=1e-14, msg=f"{na} vs {nb}")


# ------------------------------------------------------------------------------- normalisation
@pytest.mark.parametrize("make", [
    lambda: nn.BatchNorm2d(3).eval(),
    lambda: nn.BatchNorm2d(3).train(),
    lambda: nn.BatchNorm1d(3).eval(),
    lambda: nn.GroupNorm(1, 3),
    lambda: nn.GroupNorm(3, 3),
    lambda: nn.InstanceNorm2d(3, affine=True),
    lambda: nn.LayerNorm([4, 4]),
])
def test_norm_linearisation_reproduces_the_layer(make):
    torch.manual_seed(5)
    m = make().to(F64)
    with torch.no_grad():
        for t in m.parameters():
            t.uniform_(-1, 1)
        if getattr(m, "running_mean", None) is not None:
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    x = torch.randn(5, 3, 4, 4, dtype=F64) if not isinstance(m, nn.BatchNorm1d) else torch.randn(5, 3, dtype=F64)
    expected = m(x)
    s, t = _norm_affine(m, x)
    torch.testing.assert_close(s * x + t, expected, rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------------------- hooks and state
def _small_vgg() -> nn.Module:
    return create_model("vgg11_bn", (3, 16, 16), 4, width=4).to(F64)


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("variant", ["clean", "official"])
def test_no_leftover_hooks_no_patching_model_untouched(variant):
    torch.manual_seed(6)
    model = _small_vgg().train()
    before = _state(model)
    xs = torch.randn(8, 3, 16, 16, dtype=F64)
    scores = _score(model, xs, variant=variant)
    assert F.relu is ORIGINAL_RELU and torch.nn.functional.relu is ORIGINAL_RELU
    for name, m in model.named_modules():
        assert not m._forward_hooks and not m._forward_pre_hooks, name
    assert all(m.training for m in model.modules())
    after = model.state_dict()
    for k, v in before.items():
        assert torch.equal(after[k], v), k
    assert all(p.grad is None for p in model.parameters())
    for n, p in prunable_parameters(model).items():
        assert scores[n].shape == p.shape and scores[n].dtype == F64
        assert torch.isfinite(scores[n]).all() and (scores[n] >= 0).all()


def test_hooks_removed_even_when_scoring_fails():
    model = _small_vgg()
    bad = torch.randn(2, 3, 7, 7, dtype=F64)  # too small for the max-pools: the forward raises
    with pytest.raises(Exception):
        _score(model, bad)
    assert all(not m._forward_hooks for m in model.modules())


def test_official_variant_on_resnet_with_batchnorm():
    torch.manual_seed(7)
    model = create_model("resnet20", (3, 16, 16), 3, width=4).to(F64)
    xs = torch.randn(9, 3, 16, 16, dtype=F64)
    official = _score(model, xs, variant="official", batch_size=5)
    clean = _score(model, xs, variant="clean", batch_size=5)
    assert set(official) == set(prunable_parameters(model))
    for n, s in official.items():
        assert torch.isfinite(s).all() and (s >= 0).all(), n
        assert s.sum() > 0, n
    assert any(not torch.allclose(official[n], clean[n]) for n in official)


# ------------------------------------------------------------------------------- through prune_at_init
@pytest.mark.parametrize("variant", ["clean", "official"])
def test_prune_at_init_exact_count(variant):
    torch.manual_seed(8)
    model = create_model("convnet", (3, 8, 8), 4, depth=2, width=8, norm="batch")
    before = _state(model)
    x = torch.randn(12, 3, 8, 8)
    batches = ScoringBatches(x, torch.arange(12) % 4, (3, 8, 8), 4, batch_size=8)
    mask = prune_at_init(model, PXScorer(variant=variant), 0.1, batches, rounds=4)
    total = sum(p.numel() for p in prunable_parameters(model).values())
    assert mask.kept == round(0.1 * total)
    for k, v in before.items():
        assert torch.equal(model.state_dict()[k], v), k


def test_prune_at_init_vgg_with_max_pools_and_convnet_with_groupnorm():
    torch.manual_seed(9)
    cases = [
        (create_model("vgg11_bn", (3, 16, 16), 3, width=4), (3, 16, 16)),
        (create_model("convnet", (3, 8, 8), 3, depth=2, width=4, norm="instance"), (3, 8, 8)),
    ]
    for model, shape in cases:
        batches = ScoringBatches(torch.randn(6, *shape), torch.arange(6) % 3, shape, 3)
        mask = prune_at_init(model, PXScorer(), 0.05, batches, rounds=3)
        assert mask.kept == round(0.05 * mask.total)


# ------------------------------------------------------------------------------- functional activations
class _FunctionalVGG(nn.Module):
    """A small VGG-style net whose forward calls F.relu (and friends), with an nn.ReLU twin below."""

    def __init__(self, modules: bool, how: str = "F.relu") -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.conv2, self.bn2 = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.pool = nn.MaxPool2d(2)
        self.conv3 = nn.Conv2d(8, 16, 3, padding=1)
        self.fc = nn.Linear(16 * 4 * 4, 5)
        self.modules_, self.how = modules, how
        self.relus = nn.ModuleList([nn.ReLU() for _ in range(3)])

    def _act(self, i: int, x: torch.Tensor) -> torch.Tensor:
        if self.modules_:
            return self.relus[i](x)
        if self.how == "F.relu":
            return F.relu(x, inplace=i == 1)
        if self.how == "torch.relu":
            return torch.relu(x)
        return x.relu_()  # the tensor method, in place

    def forward(self, x):
        x = self.pool(self._act(0, self.bn1(self.conv1(x))))
        x = self.pool(self._act(1, self.bn2(self.conv2(x))))
        return self.fc(self._act(2, self.conv3(x)).flatten(1))


@pytest.mark.parametrize("how", ["F.relu", "torch.relu", "Tensor.relu_"])
@pytest.mark.parametrize("variant", ["clean", "official"])
def test_a_functional_relu_model_gets_exactly_its_module_twins_scores_and_mask(how, variant):
    torch.manual_seed(0)
    functional = _FunctionalVGG(modules=False, how=how).to(F64)
    twin = _FunctionalVGG(modules=True).to(F64)
    twin.load_state_dict(functional.state_dict())
    xs = torch.randn(6, 3, 16, 16, dtype=F64)
    a, b = _score(functional, xs, variant=variant), _score(twin, xs, variant=variant)
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0)
    masks = [prune_at_init(m, PXScorer(variant=variant), 0.02, _batches(xs), rounds=3) for m in (functional, twin)]
    assert all(torch.equal(masks[0][n], masks[1][n]) for n in masks[0])


def test_a_torchvision_model_mixing_modules_and_functional_relu_is_gated_completely():
    """torchvision's DenseNet: nn.ReLU modules in its layers, F.relu(..., inplace=True) in its forward."""
    from torchvision.models import DenseNet

    class ModuleReluDenseNet(nn.Module):  # the same network with the last ReLU as a module
        def __init__(self, net: DenseNet) -> None:
            super().__init__()
            self.features, self.classifier, self.relu = net.features, net.classifier, nn.ReLU()

        def forward(self, x):
            out = F.adaptive_avg_pool2d(self.relu(self.features(x)), (1, 1))
            return self.classifier(torch.flatten(out, 1))

    torch.manual_seed(1)
    net = DenseNet(growth_rate=4, block_config=(2, 2), num_init_features=8, bn_size=2, num_classes=3).to(F64)
    net.eval()
    xs = torch.randn(4, 3, 32, 32, dtype=F64)
    a, b = _score(net, xs), _score(ModuleReluDenseNet(net), xs)
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0)


@pytest.mark.parametrize("act, name", [(nn.GELU(), "GELU"), (nn.SiLU(), "SiLU"), (nn.LeakyReLU(), "LeakyReLU"),
                                       (nn.ReLU6(), "Hardtanh"), (nn.Tanh(), "tanh")])
def test_an_activation_px_cannot_gate_is_refused_by_name(act, name):
    model = nn.Sequential(nn.Linear(4, 6), act, nn.Linear(6, 2)).to(F64)
    with pytest.raises(ValueError, match=f"applies {name}, which has no 0/1 path gate"):
        _score(model, torch.randn(3, 4, dtype=F64))
    assert not torch._C._is_torch_function_mode_enabled()  # the gating mode ended with the pass
