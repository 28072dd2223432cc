import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from distill import mtt
from distill.artifact import DistilledSet, checkpoint_path, load_checkpoint
from distill.methods import DistillConfig, derive_seed, distill_dataset, network_for, recipe_hash, sample_network
from distill.mtt import MTTOptions, ParamLayout, expert_buffer_hash, train_experts, trajectory_loss, unroll_student
from tests.clock import install
from training import trainer

TINY_NET = {"name": "convnet", "options": {"width": 8, "depth": 2}}
OPTS = {
    "num_experts": 2, "expert_epochs": 3, "expert_lr": 0.05, "syn_steps": 4, "expert_epochs_match": 2,
    "max_start_epoch": 2, "lr_lr": 1e-4, "batch_syn": 10,
}


def _cfg(**overrides):
    options = {**OPTS, **overrides.pop("options", {})}
    settings = dict(method="mtt", ipc=2, iterations=3, lr_images=10.0, device="cpu", network=TINY_NET,
                    progress_every=1, options=options)
    settings.update(overrides)
    return DistillConfig(**settings)


def _tiny_mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3))


# ------------------------------------------------------------------------------------------ unroll
def test_param_layout_round_trip():
    net = _tiny_mlp()
    layout = ParamLayout.of(net)
    flat = layout.flatten(net)
    assert flat.shape == (4 * 5 + 5 + 5 * 3 + 3,) == (layout.size,)
    for name, p in net.named_parameters():
        assert torch.equal(layout.unflatten(flat)[name], p.detach())
    with pytest.raises(ValueError, match="flat vector"):
        layout.unflatten(flat[:-1])


def test_unrolled_student_matches_manual_sgd():
    net = _tiny_mlp()
    layout = ParamLayout.of(net)
    gen = torch.Generator().manual_seed(1)
    batches = [(torch.randn(6, 4, generator=gen), torch.randint(0, 3, (6,), generator=gen)) for _ in range(2)]
    lr = 0.3

    manual = copy.deepcopy(net)
    expected = []
    for x, y in batches:
        params = list(manual.parameters())
        grads = torch.autograd.grad(F.cross_entropy(manual(x), y), params)
        with torch.no_grad():
            for p, g in zip(params, grads):
                p.sub_(lr * g)
        expected.append(layout.flatten(manual).clone())

    start = layout.flatten(net)
    one = unroll_student(net, layout, start, batches[:1], lr)
    two = unroll_student(net, layout, start, batches, lr)
    assert torch.allclose(one, expected[0], atol=1e-6)
    assert torch.allclose(two, expected[1], atol=1e-6)
    assert torch.equal(layout.flatten(net), start)  # the module's own parameters are untouched


def test_unroll_is_differentiable_in_step_size_and_inputs():
    net = _tiny_mlp()
    layout = ParamLayout.of(net)
    start = layout.flatten(net)
    x = torch.randn(6, 4, requires_grad=True)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    lr = torch.tensor(0.1, requires_grad=True)
    v = torch.randn(layout.size)
    (unroll_student(net, layout, start, [(x, y)], lr) * v).sum().backward()

    theta = start.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(torch.func.functional_call(net, layout.unflatten(theta), (x,)), y),
                               theta)
    # theta_1 = theta_0 - lr * g  =>  d<theta_1, v>/d lr = -<g, v>
    assert lr.grad is not None and float(lr.grad) == pytest.approx(-float(g.detach() @ v), rel=1e-4)
    assert x.grad is not None and x.grad.abs().sum() > 0  # second order: through the gradient to the inputs


def test_trajectory_loss_normalisation():
    start, target = torch.zeros(5), torch.arange(5.0)
    assert float(trajectory_loss(start, start, target)) == pytest.approx(1.0)
    assert float(trajectory_loss(target, start, target)) == 0.0
    assert float(trajectory_loss(target / 2, start, target)) == pytest.approx(0.25)


def test_options_validation():
    assert MTTOptions().num_experts == 10
    with pytest.raises(ValueError, match="beyond the recorded trajectory"):
        MTTOptions(expert_epochs=3, max_start_epoch=3, expert_epochs_match=2)
    MTTOptions(expert_epochs=3, max_start_epoch=2, expert_epochs_match=2)  # t <= 1, t + M <= 3
    with pytest.raises(ValueError, match="min_syn_lr"):
        MTTOptions(lr_teacher=1e-7)


# ------------------------------------------------------------------------------------------ end to end
def test_experts_then_distillation_end_to_end(digits, tmp_path, monkeypatch):
    ckpt = tmp_path / "ckpt"
    records = []
    matching, experts = install(monkeypatch, mtt), install(monkeypatch, trainer)
    ds = distill_dataset(digits, _cfg(), progress=lambda i, m: records.append((i, m)), checkpoint_dir=ckpt)
    measured = matching.span()  # before anything else reads the clock
    n_train = len(digits.train)

    # expert buffer: 2 trajectories of 3 epochs + the initial weights, stored under checkpoint_dir
    cfg = _cfg()
    opts = MTTOptions(**cfg.options)
    bhash = expert_buffer_hash(digits, network_for(cfg, digits), opts, cfg.seed)
    state = load_checkpoint(checkpoint_path(ckpt, "mtt-experts", bhash), bhash)
    assert state is not None and len(state["trajectories"]) == 2
    init0 = sample_network(network_for(cfg, digits), digits, derive_seed(cfg.seed, "mtt-expert-init", 0))
    layout = ParamLayout.of(init0)
    for traj in state["trajectories"]:
        assert traj.shape == (4, layout.size)
        assert all(not torch.equal(traj[e], traj[e + 1]) for e in range(3))
    assert torch.equal(state["trajectories"][0][0], layout.flatten(init0))  # theta_0 is the untrained init
    assert not torch.equal(state["trajectories"][0][0], state["trajectories"][1][0])
    assert state["sample_passes"] == [3 * n_train, 3 * n_train]

    # the artifact
    assert ds.x.shape == (20, 1, 8, 8) and torch.equal(ds.y, torch.arange(10).repeat_interleave(2))
    assert torch.isfinite(ds.x).all()
    init = distill_dataset(digits, _cfg(iterations=0))
    assert init.cost["sample_passes"] == 0  # no iterations: no experts trained
    assert not torch.allclose(ds.x, init.x)
    assert ds.recipe["options"] == opts.model_dump(mode="json")
    assert ds.content_hash == recipe_hash(ds.recipe, ds.source)
    cost = ds.cost
    assert cost["expert_sample_passes"] == 2 * 3 * n_train and cost["experts_reused"] == 0
    assert cost["distill_sample_passes"] == 3 * 4 * 10  # iterations x syn_steps x batch_syn
    assert cost["sample_passes"] == cost["expert_sample_passes"] + cost["distill_sample_passes"]
    # the costs as measured on the modules' clocks: each expert's fit one step, the matching from first to last
    assert cost["expert_wall_time_s"] == 2 * experts.step and cost["distill_wall_time_s"] == measured > 0
    assert cost["wall_time_s"] == cost["expert_wall_time_s"] + cost["distill_wall_time_s"]

    # the learnable step size received a gradient and stayed positive
    lrs = [m["syn_lr"] for i, m in records if i > 0]
    assert len(lrs) == 3 and all(lr > 0 for lr in lrs)
    assert cost["learned_lr"] > 0 and cost["learned_lr"] != pytest.approx(0.01, rel=1e-6)  # lr_teacher
    assert [m["expert"] for i, m in records if i == 0] == [1, 2]  # expert progress, before iteration 1

    ds.save(tmp_path / "set.pt")
    back = DistilledSet.load(tmp_path / "set.pt")
    assert torch.equal(back.x, ds.x) and torch.equal(back.y, ds.y)
    assert (back.recipe, back.cost, back.content_hash) == (ds.recipe, ds.cost, ds.content_hash)

    # another distillation recipe reuses the stored experts (and still counts what they cost)
    again = distill_dataset(digits, _cfg(options={"syn_steps": 2}), checkpoint_dir=ckpt)
    assert again.cost["experts_reused"] == 2 and again.cost["expert_sample_passes"] == 2 * 3 * n_train
    fewer = distill_dataset(digits, _cfg(iterations=1, options={"num_experts": 1}), checkpoint_dir=ckpt)
    assert fewer.cost["experts_reused"] == 1 and fewer.cost["expert_sample_passes"] == 3 * n_train

    # the finished run asked for again is served from its checkpoint, without touching the experts
    repeat = distill_dataset(digits, _cfg(), checkpoint_dir=ckpt)
    assert torch.equal(repeat.x, ds.x) and repeat.cost["sample_passes"] == cost["sample_passes"]


def test_step_size_stays_positive_under_a_huge_lr_lr(digits, tmp_path):
    records = []
    # Two iterations: the second is clamped; after it the pixels have taken a huge step, and whether
    # a later iteration overflows depends on the random draws, not on the clamp under test.
    ds = distill_dataset(digits, _cfg(iterations=2, options={"lr_lr": 10.0, "min_syn_lr": 1e-4}),
                         progress=lambda i, m: records.append(m), checkpoint_dir=tmp_path)
    lrs = [m["syn_lr"] for m in records if "syn_lr" in m]
    assert all(lr >= 1e-4 * (1 - 1e-6) for lr in lrs)
    assert ds.cost["learned_lr"] > 0 and math.isfinite(ds.cost["learned_lr"])


def test_train_experts_extends_a_shorter_buffer(digits, tmp_path):
    cfg = _cfg()
    net_cfg = network_for(cfg, digits)
    one = train_experts(digits, net_cfg, MTTOptions(**{**OPTS, "num_experts": 1}), 0, torch.device("cpu"), tmp_path)
    two = train_experts(digits, net_cfg, MTTOptions(**OPTS), 0, torch.device("cpu"), tmp_path)
    assert (one.reused, two.reused) == (0, 1) and len(two.trajectories) == 2
    assert torch.equal(two.trajectories[0], one.trajectories[0])


def test_resume_after_interruption_reproduces_the_uninterrupted_run(digits, tmp_path):
    full = distill_dataset(digits, _cfg(), checkpoint_dir=tmp_path / "a")

    class Stop(Exception):
        pass

    def stop_at_two(iteration, metrics):
        if iteration == 2:
            raise Stop

    with pytest.raises(Stop):
        distill_dataset(digits, _cfg(checkpoint_every=1), progress=stop_at_two, checkpoint_dir=tmp_path / "b")
    seen = []
    resumed = distill_dataset(digits, _cfg(checkpoint_every=1), progress=lambda i, m: seen.append(i),
                              checkpoint_dir=tmp_path / "b")
    assert seen == [2, 3]  # resumed after iteration 1, experts from the stored buffer
    assert resumed.cost["experts_reused"] == 2
    assert torch.allclose(resumed.x, full.x, atol=1e-6)
    assert resumed.cost["learned_lr"] == pytest.approx(full.cost["learned_lr"], rel=1e-6)
    assert resumed.cost["sample_passes"] == full.cost["sample_passes"]


def test_a_step_size_that_overflows_stops_with_the_option_to_lower(digits, tmp_path):
    """The loss can be finite while its gradient overflows the learned step size: named, not NaN sets."""
    with pytest.raises(FloatingPointError, match="lower lr_lr"):
        distill_dataset(digits, _cfg(iterations=3, options={"lr_lr": 10.0, "min_syn_lr": 1e-4}), checkpoint_dir=tmp_path)
