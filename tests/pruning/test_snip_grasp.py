"""SNIP and GraSP against independent autograd references on tiny networks."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from pruning.at_init import prune_at_init
from pruning.mask import Mask, prunable_parameters
from pruning.scorers import SCORERS, ScoringBatches
from pruning.scorers.grasp import GraSPScorer
from pruning.scorers.snip import SNIPScorer
from training.models import create_model


def _mlp():
    torch.manual_seed(0)
    return create_model("mlp", (6,), 3, widths=[8, 5]).double()  # 48 + 40 + 15 = 103 prunable weights


def _convnet(norm="none"):
    torch.manual_seed(1)
    return create_model("convnet", (2, 4, 4), 3, width=3, depth=2, norm=norm).double()


def _batches(input_shape, n=10, batch_size=5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *input_shape, generator=gen)  # float32: the scorer casts to the model's dtype
    y = torch.arange(n) % 3
    return ScoringBatches(x, y, tuple(input_shape), 3, batch_size=batch_size)


def _random_mask(model, density=0.6, seed=3):
    gen = torch.Generator().manual_seed(seed)
    return Mask({n: torch.rand(p.shape, generator=gen) < density for n, p in prunable_parameters(model).items()})


def _snip_reference(model, batches):
    """abs(theta * dL/dtheta) with L = sum over batches of the batch-mean CE, by plain backward."""
    model = copy.deepcopy(model).eval()
    model.zero_grad()
    for x, y in batches:
        F.cross_entropy(model(x.double()), y).backward()
    return {n: (p.detach() * p.grad).abs() for n, p in prunable_parameters(model).items()}


def test_registered():
    assert SCORERS.get("snip") is SNIPScorer and SCORERS.get("grasp") is GraSPScorer
    assert SNIPScorer.needs_data and GraSPScorer.needs_data
    assert SNIPScorer.default_rounds == 1 and GraSPScorer.default_rounds == 1


@pytest.mark.parametrize("make, shape", [(_mlp, (6,)), (_convnet, (2, 4, 4))])
@pytest.mark.parametrize("masked", [False, True])
def test_snip_is_abs_theta_times_grad(make, shape, masked):
    model = make()
    mask = _random_mask(model) if masked else Mask.ones(model)
    mask.apply_(model)
    batches = _batches(shape)
    assert len(list(batches)) == 2
    ref = _snip_reference(model, batches)
    got = SNIPScorer().score(model, prunable_parameters(model), mask, batches)
    assert set(got) == set(ref)
    for n in ref:
        assert got[n].dtype == torch.float64 and got[n].shape == ref[n].shape
        torch.testing.assert_close(got[n], ref[n], rtol=1e-10, atol=1e-14)
        if masked:
            assert torch.all(got[n][~mask[n]] == 0)
    assert all(p.grad is None for p in model.parameters())  # the scorer leaves no .grad behind


def _grasp_reference(model, mask, batches, temperature):
    """theta * (H g) with H the explicit Hessian of the summed loss w.r.t. the flat prunable weights.

    The weights enter as flat * m (the masked net), so g and H are those of the masked net.
    """
    model = copy.deepcopy(model).eval()
    params = prunable_parameters(model)
    names = list(params)
    shapes = [params[n].shape for n in names]
    sizes = [params[n].numel() for n in names]
    flat0 = torch.cat([params[n].detach().flatten() for n in names])
    gate = torch.cat([mask[n].flatten().double() for n in names])
    data = [(x.double(), y) for x, y in batches]

    def loss_of(flat):
        pieces = (flat * gate).split(sizes)
        weights = {n: piece.view(s) for n, piece, s in zip(names, pieces, shapes)}
        return sum(F.cross_entropy(functional_call(model, weights, (x,)) / temperature, y) for x, y in data)

    hessian = torch.func.hessian(loss_of)(flat0)
    grad = torch.func.grad(loss_of)(flat0)
    score = (flat0 * (hessian @ grad)).detach()
    return dict(zip(names, (s.view(shape) for s, shape in zip(score.split(sizes), shapes))))


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")  # torch.func internals
@pytest.mark.parametrize("temperature, masked", [(200.0, False), (1.0, False), (3.0, True)])
def test_grasp_matches_explicit_hessian_vector_product(temperature, masked):
    model = _mlp()
    mask = _random_mask(model) if masked else Mask.ones(model)
    mask.apply_(model)
    batches = _batches((6,))
    ref = _grasp_reference(model, mask, batches, temperature)
    got = GraSPScorer(temperature=temperature).score(model, prunable_parameters(model), mask, batches)
    scale = max(r.abs().max() for r in ref.values())
    assert scale > 0
    for n in ref:
        assert got[n].dtype == torch.float64
        torch.testing.assert_close(got[n], ref[n], rtol=1e-8, atol=1e-10 * float(scale))
    flat = torch.cat([g.flatten() for g in got.values()])
    assert (flat < 0).any() and (flat > 0).any()  # signed, no absolute value
    assert all(p.grad is None for p in model.parameters())


def test_grasp_temperature_changes_scores():
    model = _mlp()
    batches = _batches((6,))
    params, mask = prunable_parameters(model), Mask.ones(model)
    a = GraSPScorer(temperature=1.0).score(model, params, mask, batches)
    b = GraSPScorer(temperature=200.0).score(model, params, mask, batches)
    assert not all(torch.allclose(a[n], b[n]) for n in a)


def test_bad_settings():
    with pytest.raises(ValueError, match="bn_mode"):
        SNIPScorer(bn_mode="frozen")
    with pytest.raises(ValueError, match="bn_mode"):
        GraSPScorer(bn_mode="Train")
    with pytest.raises(ValueError, match="temperature"):
        GraSPScorer(temperature=0.0)


@pytest.mark.parametrize("scorer_cls", [SNIPScorer, GraSPScorer])
def test_bn_mode(scorer_cls):
    model = _convnet(norm="batch")
    with torch.no_grad():  # non-trivial running statistics, so eval and train modes differ clearly
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    batches = _batches((2, 4, 4))
    params, mask = prunable_parameters(model), Mask.ones(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}

    results = {}
    for given_training in (True, False):
        model.train(given_training)
        results[given_training] = scorer_cls(bn_mode="eval").score(model, params, mask, batches)
        assert model.training is given_training  # mode restored
        for k, v in model.state_dict().items():
            assert torch.equal(v, before[k]), k  # running stats untouched
    for n in params:
        assert torch.equal(results[True][n], results[False][n])

    model.eval()
    train_scores = scorer_cls(bn_mode="train").score(model, params, mask, batches)
    assert model.training is False
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k  # train-mode scoring also restores the buffers
    assert not all(torch.allclose(train_scores[n], results[False][n]) for n in params)


@pytest.mark.parametrize("name", ["snip", "grasp"])
@pytest.mark.parametrize("scope", ["global", "layerwise"])
@pytest.mark.parametrize("rounds", [1, 2])
def test_prune_at_init_exact_count(name, scope, rounds):
    torch.manual_seed(0)
    model = create_model("convnet", (2, 4, 4), 3, width=4, depth=2, norm="batch")  # float32, as trained
    before = {k: v.clone() for k, v in model.state_dict().items()}
    density = 0.13
    mask = prune_at_init(model, SCORERS.get(name)(), density, _batches((2, 4, 4)), rounds=rounds, scope=scope)
    report = mask.report()
    if scope == "global":
        assert report.kept == round(density * report.total)
    else:
        for layer in report.layers.values():
            assert layer.kept == round(density * layer.total)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])


# ------------------------------------------------------------------------------- iterative SNIP, FORCE
def _sensitivity_at_mask(model, mask, batches, original: bool):
    """abs(theta * dL/dw) at w = theta * m by plain backward; theta = the original weights (FORCE) or the
    masked ones (iterative SNIP)."""
    net = copy.deepcopy(model).eval()
    params = prunable_parameters(net)
    theta = {n: p.detach().clone() for n, p in params.items()}
    with torch.no_grad():
        for n, p in params.items():
            p.mul_(mask[n])
    net.zero_grad()
    for x, y in batches:
        F.cross_entropy(net(x.double()), y).backward()
    return {n: ((theta[n] if original else theta[n] * mask[n]) * p.grad).abs() for n, p in params.items()}


def test_iterative_snip_and_force_are_registered_with_many_rounds():
    from pruning.scorers.snip import FORCEScorer, IterativeSNIPScorer

    assert SCORERS.get("iter_snip") is IterativeSNIPScorer and SCORERS.get("force") is FORCEScorer
    assert IterativeSNIPScorer.default_rounds == FORCEScorer.default_rounds == 100
    assert FORCEScorer.revives and not IterativeSNIPScorer.revives


@pytest.mark.parametrize("name", ["iter_snip", "force"])
def test_iterative_scores_are_the_sensitivity_at_the_current_mask(name):
    model, batches = _mlp(), _batches((6,))
    mask = _random_mask(model)
    scorer = SCORERS.get(name)()
    work = copy.deepcopy(model)
    params = prunable_parameters(work)
    if not scorer.revives:  # iterative SNIP scores the masked net's own weights
        with torch.no_grad():
            for n, p in params.items():
                p.mul_(mask[n])
    scores = scorer.score(work, params, mask, batches)
    expected = _sensitivity_at_mask(model, mask, batches, original=scorer.revives)
    for n in scores:
        torch.testing.assert_close(scores[n], expected[n])
    pruned_scores = torch.cat([scores[n][~mask[n]] for n in scores])
    assert (pruned_scores > 0).any() if scorer.revives else (pruned_scores == 0).all()


def test_force_can_bring_back_a_weight_that_iterative_snip_cannot():
    model, batches = _mlp(), _batches((6,))
    full = _sensitivity_at_mask(model, Mask.ones(model), batches, original=True)
    flat = torch.cat([full[n].flatten() for n in full])
    cut = flat.topk(10).values.min()
    start = Mask({n: full[n] < cut for n in full})  # the ten most sensitive weights pruned
    for name, revives in (("iter_snip", False), ("force", True)):
        mask = prune_at_init(model, SCORERS.get(name)(), 0.5, batches, rounds=1, start=start)
        assert sum(int(m.sum()) for m in mask.values()) == round(0.5 * 103), name
        revived = sum(int((mask[n] & ~start[n]).sum()) for n in mask)
        assert (revived > 0) == revives, (name, revived)


# ------------------------------------------------------------------------------- ProsPr
def _prospr_by_hand(model, mask, batches, steps, lr, biases_step=True):
    """The meta-gradient with the MLP's forward written out by hand (weights W_l, biases b_l); the
    unrolled SGD steps update the biases too (the reference's optimizer over every parameter) unless
    ``biases_step`` is False."""
    layers = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    names = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    gates = [mask[f"{n}.weight"].double().requires_grad_(True) for n in names]
    w = [layer.weight.detach() * g.detach() * g for layer, g in zip(layers, gates)]  # the masked net's weights
    b = [layer.bias.detach().clone().requires_grad_(biases_step) for layer in layers]

    def forward(ws, bs, x):
        h = x.double().flatten(1)
        for i, (wi, bi) in enumerate(zip(ws, bs)):
            h = h @ wi.T + bi
            if i < len(ws) - 1:
                h = torch.relu(h)
        return h

    data = list(batches)
    for k in range(steps):
        x, y = data[k % len(data)]
        loss = F.cross_entropy(forward(w, b, x), y)
        if biases_step:
            grads = torch.autograd.grad(loss, w + b, create_graph=True)
            w = [wi - lr * gi for wi, gi in zip(w, grads[:len(w)])]
            b = [bi - lr * gi for bi, gi in zip(b, grads[len(w):])]
        else:
            grads = torch.autograd.grad(loss, w, create_graph=True)
            w = [wi - lr * gi for wi, gi in zip(w, grads)]
    x, y = data[steps % len(data)]
    meta = torch.autograd.grad(F.cross_entropy(forward(w, b, x), y), gates)
    return {f"{n}.weight": g.abs() for n, g in zip(names, meta)}


@pytest.mark.parametrize("inner", ["all", "prunable"])
@pytest.mark.parametrize("steps", [0, 1, 3])
def test_prospr_is_the_meta_gradient_through_the_unrolled_steps(steps, inner):
    from pruning.scorers.prospr import ProsPrScorer

    model, batches = _mlp().eval(), _batches((6,), n=12, batch_size=4)
    mask = _random_mask(model)
    work = copy.deepcopy(model)
    params = prunable_parameters(work)
    with torch.no_grad():
        for n, p in params.items():
            p.mul_(mask[n])
    scores = ProsPrScorer(steps=steps, lr=0.2, inner=inner).score(work, params, mask, batches)
    expected = _prospr_by_hand(model, mask, batches, steps, 0.2, biases_step=inner == "all")
    for n in expected:
        torch.testing.assert_close(scores[n], expected[n])
    if steps > 0:  # stepping the biases matters: the other variant's scores differ
        other = _prospr_by_hand(model, mask, batches, steps, 0.2, biases_step=inner != "all")
        assert any(not torch.allclose(scores[n], other[n]) for n in other)
    assert ProsPrScorer().inner == "all" and ProsPrScorer().bn_mode == "train"  # the authors' code's defaults
    if steps == 0:  # no step taken: SNIP on the first batch
        x, y = next(iter(batches))
        snip = SNIPScorer().score(work, params, mask, ScoringBatches(x, y, (6,), 3, batch_size=4))
        for n in snip:
            torch.testing.assert_close(scores[n], snip[n])
    else:  # the steps matter: a different ranking than SNIP's
        snip = SNIPScorer().score(work, params, mask, batches)
        assert any(not torch.allclose(scores[n], snip[n]) for n in snip)
