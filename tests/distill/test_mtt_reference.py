"""``distill.mtt`` against the independent re-implementation of the authors' loop in
``benchmarks/mtt_reference.py``: from identical state, with the randomness taken out, both must compute
the same distillation steps. The benchmark compares the sets' quality; this pins the arithmetic (the
flat-parameter forward, the unroll, the normalised loss, both optimizers and the lr parameterisation)."""
import importlib.util
from pathlib import Path

import pytest
import torch

from distill.methods import DistillConfig, distill_dataset, sample_network
from distill.mtt import MTTOptions, train_experts
from training.models import ModelConfig

ROOT = Path(__file__).resolve().parents[2]
NET = ModelConfig(name="conv1d", options={"width": 8})


def _reference():
    spec = importlib.util.spec_from_file_location("mtt_reference", ROOT / "benchmarks" / "mtt_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_flat_forward_is_the_module_forward(mnist1d):
    ref = _reference()
    net = sample_network(NET, mnist1d, 3)
    flat = torch.cat([p.detach().reshape(-1) for p in net.parameters()])
    x = mnist1d.train.x[:16]
    assert torch.allclose(ref.FlatConv1d(net)(x, flat), net(x), atol=1e-6)


def test_reference_signal_augmentation_draws_per_sample_and_keeps_gradients():
    ref = _reference()
    x = torch.randn(6, 1, 40).requires_grad_(True)
    for name, fn in ref.SIGNAL_FNS.items():
        torch.manual_seed(0)
        out = fn(x.expand(6, 1, 40))
        assert out.shape == x.shape
        assert not torch.allclose(out[0], out[1]), name  # same input, different per-sample draw
        (g,) = torch.autograd.grad(out.sum(), x)
        assert g.abs().sum() > 0, name


@pytest.mark.parametrize("iterations", [1, 2])
def test_one_and_two_steps_agree_with_the_reference(mnist1d, tmp_path, iterations):
    """One expert, start epoch 0 (max_start_epoch 1), each student step on the whole synthetic set
    (batch order cannot matter: the CE is a mean) and no augmentation: nothing random is left, so the
    images and the learned lr after one step (the gradients) and after two (the momentum buffers) must
    agree."""
    ref = _reference()
    options = dict(num_experts=1, expert_epochs=2, expert_lr=0.05, syn_steps=4, expert_epochs_match=2,
                   max_start_epoch=1, lr_lr=1e-4, lr_teacher=0.01)
    buffer = train_experts(mnist1d, NET, MTTOptions(**options), 0, torch.device("cpu"), tmp_path)
    common = dict(method="mtt", ipc=2, lr_images=100.0, device="cpu", network=NET, augment="none",
                  checkpoint_every=0, progress_every=1, options=options)
    init = distill_dataset(mnist1d, DistillConfig(iterations=0, **common))
    losses = []
    ours = distill_dataset(mnist1d, DistillConfig(iterations=iterations, **common),
                           progress=lambda i, m: losses.append(m["loss"]) if "loss" in m else None,
                           checkpoint_dir=tmp_path)
    assert ours.cost["experts_reused"] == 1

    theirs = ref.reference_mtt(sample_network(NET, mnist1d, 1), buffer.trajectories, init.x, init.y,
                               iterations=iterations, syn_steps=4, expert_epochs=2, max_start_epoch=1, lr_img=100.0,
                               lr_lr=1e-4, lr_teacher=0.01, batch_syn=None, dsa=False, seed=5)
    assert losses == pytest.approx(theirs["losses"], rel=1e-5)
    moved = (ours.x - init.x).abs().max()
    assert moved > 1e-3  # the step is large enough for the comparison to mean something
    assert torch.allclose(ours.x, theirs["x"], rtol=1e-4, atol=1e-5 * float(moved))
    assert ours.cost["learned_lr"] != pytest.approx(0.01, rel=1e-6)
    assert ours.cost["learned_lr"] == pytest.approx(theirs["syn_lr"], rel=1e-5)
