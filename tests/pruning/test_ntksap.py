"""NTK-SAP against a closed form, a hand-written forward, and its "new input, new weight" property."""
from __future__ import annotations

import torch
from torch import nn

from pruning.at_init import prune_at_init
from pruning.mask import Mask, prunable_parameters
from pruning.scorers import SCORERS, ScoringBatches
from pruning.scorers.ntksap import perturbation_grads
from training.models import create_model


def test_linear_layer_gradient_is_the_closed_form():
    """f(z) = (theta*m) z: the difference is -eps (Delta*m) z, so d/dm_ij of its squared norm summed over
    the batch is 2 eps^2 sum_b [(Delta*m) z_b]_i Delta_ij z_bj, whatever theta is."""
    gen = torch.Generator().manual_seed(0)
    layer = nn.Linear(5, 3, bias=False).double()
    m = (torch.rand(3, 5, generator=gen) < 0.6).double()
    theta, delta = torch.randn(3, 5, generator=gen).double(), torch.randn(3, 5, generator=gen).double()
    z, eps = torch.randn(4, 5, generator=gen).double(), 0.01
    got = perturbation_grads(layer, {"weight": m}, {"weight": theta}, {"weight": delta}, eps, z)["weight"]
    diff = z @ (delta * m).T  # [batch, out]
    expected = 2 * eps**2 * torch.einsum("bi,ij,bj->ij", diff, delta, z)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-16)


def test_two_layer_relu_net_matches_a_hand_written_forward():
    gen = torch.Generator().manual_seed(1)
    net = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2)).double()
    names = ["0.weight", "2.weight"]
    shapes = {n: dict(net.named_parameters())[n].shape for n in names}
    m = {n: (torch.rand(s, generator=gen) < 0.7).double() for n, s in shapes.items()}
    theta = {n: torch.randn(s, generator=gen).double() for n, s in shapes.items()}
    delta = {n: torch.randn(s, generator=gen).double() for n, s in shapes.items()}
    z, eps = torch.randn(7, 4, generator=gen).double(), 0.05
    got = perturbation_grads(net, m, theta, delta, eps, z)

    b1, b2 = net[0].bias.detach(), net[2].bias.detach()
    mm = {n: v.clone().requires_grad_(True) for n, v in m.items()}

    def f(w1, w2):
        return torch.relu(z @ w1.T + b1) @ w2.T + b2

    objective = (f(theta["0.weight"] * mm["0.weight"], theta["2.weight"] * mm["2.weight"])
                 - f((theta["0.weight"] + eps * delta["0.weight"]) * mm["0.weight"],
                     (theta["2.weight"] + eps * delta["2.weight"]) * mm["2.weight"])).pow(2).sum()
    want = torch.autograd.grad(objective, [mm[n] for n in names])
    for n, w in zip(names, want):
        torch.testing.assert_close(got[n], w, rtol=1e-10, atol=1e-14)


def test_scores_do_not_depend_on_the_weights_but_on_the_architecture_and_mask():
    """Every draw re-initialises the weights: two differently initialised copies score identically
    (a scorer that used the given weights would not); pruned weights score 0 and stay pruned."""
    torch.manual_seed(0)
    a = create_model("convnet", (1, 8, 8), 4, width=6, depth=2, norm="batch").double()
    torch.manual_seed(1)
    b = create_model("convnet", (1, 8, 8), 4, width=6, depth=2, norm="batch").double()
    batches = ScoringBatches(None, None, (1, 8, 8), 4)  # data-free
    params_a, params_b = prunable_parameters(a), prunable_parameters(b)
    assert not torch.equal(params_a["fc.weight"], params_b["fc.weight"])
    gen = torch.Generator().manual_seed(2)
    mask = Mask({n: torch.rand(p.shape, generator=gen) < 0.5 for n, p in params_a.items()})
    cls = SCORERS.get("ntksap")
    sa = cls(seed=3, draws=2).score(a, params_a, mask, batches)
    sb = cls(seed=3, draws=2).score(b, params_b, mask, batches)
    for n in sa:
        torch.testing.assert_close(sa[n], sb[n])
        assert bool((sa[n][~mask[n]] == 0).all()) and bool((sa[n][mask[n]] > 0).any())
    other = cls(seed=4, draws=2).score(a, params_a, mask, batches)
    assert not torch.equal(other["fc.weight"], sa["fc.weight"])  # the seed draws the weights


def test_iterative_ntksap_hits_the_exact_density():
    torch.manual_seed(0)
    model = create_model("mlp", (1, 8, 8), 10, widths=[32, 16])
    mask = prune_at_init(model, SCORERS.get("ntksap")(seed=0, draws=1), 0.05, ScoringBatches(None, None, (1, 8, 8), 10),
                         rounds=5)
    total = sum(m.numel() for m in mask.values())
    assert mask.kept == round(0.05 * total)
