"""MTT: dataset distillation by matching training trajectories (Cazenavette et al., CVPR 2022).

Two phases.

**Experts** (MTT's ``buffer.py``): ``num_experts`` networks (``cfg.network``) are trained on the REAL training
split for ``expert_epochs`` epochs with the shared ``Trainer`` (SGD ``expert_lr`` 0.01, no momentum, no
weight decay, constant lr, batch ``expert_batch`` 256), and the flat parameter vector is recorded before
training and after every epoch: expert k's trajectory is a (expert_epochs + 1, P) tensor. Expert k's
initialisation and batch order are functions of (``cfg.seed``, k) only, so expert k is the same whatever
``num_experts`` is. With a ``checkpoint_dir`` the buffer is stored there (``mtt-experts-<hash>.ckpt.pt``),
keyed by a hash of what determines the experts (network, source data, seed, expert epochs and training
settings; not ``num_experts``), saved after every expert, and reused by any later run with the same hash:
a buffer holding at least ``num_experts`` experts is used as is, a shorter one is extended. MTT trained
its experts with crop/scale/rotate augmentation; ``expert_augment: flip_crop`` turns the trainer's
flip-and-crop on (off by default: it is meant for 32x32 images, not 8x8 digits or 1-D signals).

**Distillation** (MTT's ``distill.py``), ``cfg.iterations`` times (the paper: 5000):

1. pick an expert k and a start epoch t in [0, ``max_start_epoch``); the student starts at theta*_t;
2. take ``syn_steps`` SGD steps theta <- theta - alpha * grad CE(theta; augmented synthetic minibatch;
   DSA parameters drawn per sample, as the reference's ``DiffAugment`` with seed -1 does),
   minibatches of ``batch_syn`` drawn without replacement from a reshuffled synthetic set (all of it
   when ``batch_syn`` is None), each step's gradient taken with ``create_graph=True``, through
   ``torch.func.functional_call`` on a flat parameter vector (no module is patched);
3. loss = ||theta_N - theta*_{t+M}||^2 / ||theta*_t - theta*_{t+M}||^2 with M = ``expert_epochs_match``;
4. back-propagate through the whole unroll into the synthetic inputs (SGD lr ``cfg.lr_images``, momentum
   ``cfg.momentum``; MTT uses 100-1000 and 0.5) and into the learnable step size alpha (SGD ``lr_lr``,
   same momentum), initialised at ``lr_teacher``.

alpha is a direct (not log) parameter so that MTT's published ``lr_lr`` values keep their meaning; it is
kept positive by projection: after every step it is clamped to at least ``min_syn_lr``. The learned alpha
is returned in ``cost["learned_lr"]`` (the artifact has no other free-form field that is not hashed).

Synthetic inputs live in the data's normalised space (no ZCA), like every other method here. Every random
draw is a function of (seed, iteration, ...), so a resumed run reproduces the uninterrupted one.

Cost: ``sample_passes`` = the experts' training samples (forward + backward; counted even when the
buffer is reused, since producing it is part of MTT's cost) + per iteration ``syn_steps`` x batch
synthetic samples (forward, backward with a graph, and the backward through the unroll).
``wall_time_s`` = the experts' recorded training time + the distillation time. ``cost`` keeps the terms
apart, and says how many experts came from an existing buffer.

MTT's intended use is a GPU: memory grows linearly with ``syn_steps``. On CPU use tiny configurations.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal, Sequence

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn
from torch.func import functional_call

from training.data import DataBundle
from training.identity import content_hash
from training.models import ModelConfig
from training.trainer import TrainConfig, Trainer, resolve_device

from .artifact import DistilledSet, checkpoint_path, load_checkpoint, save_checkpoint
from .methods import (
    register_distiller,
    DistillConfig,
    Progress,
    build_distilled_set,
    derive_seed,
    init_synthetic,
    make_augment,
    network_for,
    parse_options,
    run_identity,
    sample_network,
    source_for,
)

__all__ = [
    "ExpertBuffer",
    "MTTOptions",
    "ParamLayout",
    "distill_mtt",
    "expert_buffer_hash",
    "train_experts",
    "trajectory_loss",
    "unroll_student",
]


class MTTOptions(BaseModel):
    """Method options of ``mtt`` (``cfg.options``). Defaults: MTT's CIFAR-10 settings, except
    ``num_experts`` (the paper trains 100)."""

    model_config = ConfigDict(extra="forbid")

    num_experts: int = Field(10, ge=1, description="expert trajectories to train (K)")
    expert_epochs: int = Field(50, ge=1, description="epochs each expert trains on the real data (E)")
    syn_steps: int = Field(20, ge=1, description="unrolled student steps per iteration (N)")
    expert_epochs_match: int = Field(2, ge=1, description="target = expert epoch t + M")
    max_start_epoch: int = Field(20, ge=1, description="start epoch t is drawn from [0, max_start_epoch)")
    lr_lr: float = Field(1e-5, gt=0, description="SGD lr of the learnable student step size")
    lr_teacher: float = Field(0.01, gt=0, description="initial student step size")
    min_syn_lr: float = Field(1e-6, gt=0, description="the learnable step size is clamped to at least this")
    batch_syn: int | None = Field(None, ge=1, description="synthetic minibatch per student step; None = all")
    expert_lr: float = Field(0.01, gt=0, description="SGD lr of the expert trajectories")
    expert_batch: int = Field(256, ge=1, description="batch size of the experts")
    expert_momentum: float = Field(0.0, ge=0, lt=1, description="SGD momentum of the experts")
    expert_weight_decay: float = Field(0.0, ge=0, description="weight decay of the experts")
    expert_augment: Literal["none", "flip_crop"] = Field("none",
        description="augmentation while training the experts")
    syn_augment_draw: Literal["sample", "batch"] = Field("sample",
        description="DSA parameters in the unrolled student steps: per sample (the reference's training mode) "
        "or one draw per minibatch")

    @model_validator(mode="after")
    def _consistent(self) -> "MTTOptions":
        last_target = self.max_start_epoch - 1 + self.expert_epochs_match
        if last_target > self.expert_epochs:
            raise ValueError(
                f"max_start_epoch - 1 + expert_epochs_match = {last_target} exceeds expert_epochs = "
                f"{self.expert_epochs}: the target epoch would lie beyond the recorded trajectory"
            )
        if self.min_syn_lr >= self.lr_teacher:
            raise ValueError(f"min_syn_lr ({self.min_syn_lr}) must be below lr_teacher ({self.lr_teacher})")
        return self


# ------------------------------------------------------------------------------------------ flat params
@dataclass(frozen=True)
class ParamLayout:
    """How a module's parameters sit in one flat vector (``named_parameters`` order)."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]

    @classmethod
    def of(cls, net: nn.Module) -> "ParamLayout":
        named = list(net.named_parameters())
        return cls(tuple(n for n, _ in named), tuple(tuple(p.shape) for _, p in named))

    @property
    def numels(self) -> list[int]:
        out = []
        for shape in self.shapes:
            n = 1
            for s in shape:
                n *= s
            out.append(n)
        return out

    @property
    def size(self) -> int:
        return sum(self.numels)

    def flatten(self, net: nn.Module) -> torch.Tensor:
        """The module's current parameters as one detached vector."""
        params = dict(net.named_parameters())
        return torch.cat([params[n].detach().reshape(-1) for n in self.names])

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Views of ``flat`` shaped as the module's parameters (gradients flow back to ``flat``)."""
        if flat.dim() != 1 or flat.numel() != self.size:
            raise ValueError(f"expected a flat vector of {self.size} parameters, got shape {tuple(flat.shape)}")
        chunks = flat.split(self.numels)
        return {n: c.view(s) for n, c, s in zip(self.names, chunks, self.shapes)}


def unroll_student(
    net: nn.Module,
    layout: ParamLayout,
    start: torch.Tensor,
    batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    lr: torch.Tensor | float,
    create_graph: bool = True,
) -> torch.Tensor:
    """Plain SGD from the flat vector ``start``: theta <- theta - lr * grad CE(net_theta(x), y), one step per
    batch, run with ``functional_call`` (``net``'s own parameters are not used or changed). With
    ``create_graph`` the result stays differentiable w.r.t. ``start``, the batches' inputs and ``lr``."""
    theta = start if start.requires_grad else start.detach().requires_grad_(True)
    for x, y in batches:
        out = functional_call(net, layout.unflatten(theta), (x,))
        ce = F.cross_entropy(out, y)
        (grad,) = torch.autograd.grad(ce, theta, create_graph=create_graph)
        theta = theta - lr * grad
    return theta


def trajectory_loss(student: torch.Tensor, start: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """||student - target||^2 / ||start - target||^2 (MTT's normalised parameter distance)."""
    num = (student - target).pow(2).sum()
    den = (start - target).pow(2).sum().clamp_min(torch.finfo(start.dtype).tiny)
    return num / den


# ------------------------------------------------------------------------------------------ experts
@dataclass
class ExpertBuffer:
    """Expert trajectories (each (epochs + 1, P), CPU, float32) and what producing each one cost."""

    names: list[str]
    trajectories: list[torch.Tensor]
    sample_passes: list[int] = field(default_factory=list)
    wall_time_s: list[float] = field(default_factory=list)
    test_accuracy: list[float] = field(default_factory=list)
    reused: int = 0  # how many of them came from an existing buffer file

    def state(self) -> dict:
        return {
            "names": list(self.names),
            "trajectories": [t.contiguous() for t in self.trajectories],
            "sample_passes": list(self.sample_passes),
            "wall_time_s": list(self.wall_time_s),
            "test_accuracy": list(self.test_accuracy),
        }


def _expert_train_config(opts: MTTOptions) -> TrainConfig:
    return TrainConfig(
        epochs=opts.expert_epochs,
        batch_size=opts.expert_batch,
        optimizer="sgd",
        lr=opts.expert_lr,
        momentum=opts.expert_momentum,
        weight_decay=opts.expert_weight_decay,
        schedule="constant",
        augment=opts.expert_augment,
    )


def expert_buffer_hash(real: DataBundle, net_cfg: ModelConfig, opts: MTTOptions, seed: int) -> str:
    """Identity of expert trajectories: everything that changes expert k, not how many there are."""
    return content_hash({
        "kind": "mtt-experts-v1",
        "network": net_cfg.model_dump(mode="json"),
        "source": source_for(real),
        "seed": seed,
        "train": _expert_train_config(opts).model_dump(mode="json", exclude={"device", "eval_batch_size", "amp"}),
    })


def train_experts(
    real: DataBundle,
    net_cfg: ModelConfig,
    opts: MTTOptions,
    seed: int,
    device: torch.device,
    checkpoint_dir: Path | None = None,
    on_expert: Callable[[int, dict], None] | None = None,
) -> ExpertBuffer:
    """At least ``opts.num_experts`` expert trajectories: loaded from ``checkpoint_dir`` when a buffer with
    the same hash is there, the missing ones trained (and the buffer saved after each)."""
    bhash = expert_buffer_hash(real, net_cfg, opts, seed)
    path = checkpoint_path(checkpoint_dir, "mtt-experts", bhash) if checkpoint_dir is not None else None
    template = sample_network(net_cfg, real, derive_seed(seed, "mtt-expert-init", 0))
    layout = ParamLayout.of(template)
    buffer = ExpertBuffer(list(layout.names), [])
    state = load_checkpoint(path, bhash) if path is not None else None
    if state is not None:
        trajectories = list(state["trajectories"])
        expected = (opts.expert_epochs + 1, layout.size)
        if list(state["names"]) != list(layout.names) or any(tuple(t.shape) != expected for t in trajectories):
            raise ValueError(f"expert buffer {path} does not match the network's parameters; delete it to retrain")
        buffer = ExpertBuffer(
            list(state["names"]),
            trajectories,
            [int(v) for v in state["sample_passes"]],
            [float(v) for v in state["wall_time_s"]],
            [float(v) for v in state["test_accuracy"]],
            reused=len(trajectories),
        )
    train_cfg = _expert_train_config(opts)
    for k in range(len(buffer.trajectories), opts.num_experts):
        model = sample_network(net_cfg, real, derive_seed(seed, "mtt-expert-init", k), device)
        trainer = Trainer(train_cfg, real, seed=derive_seed(seed, "mtt-expert-order", k) % 2**31, device=device)
        snapshots: list[torch.Tensor] = []

        def record(step: int, model=model, snapshots=snapshots, spe=trainer.steps_per_epoch) -> None:
            if step % spe == 0:  # before the first step of an epoch: the weights after the last one
                snapshots.append(layout.flatten(model).to("cpu", torch.float32, copy=True))

        result = trainer.fit(model, eval_every_epoch=False, on_step=record)
        snapshots.append(layout.flatten(model).to("cpu", torch.float32, copy=True))
        if len(snapshots) != opts.expert_epochs + 1:
            raise RuntimeError(f"expert {k}: recorded {len(snapshots)} snapshots, expected {opts.expert_epochs + 1}")
        buffer.trajectories.append(torch.stack(snapshots))
        buffer.sample_passes.append(int(result.sample_passes))
        buffer.wall_time_s.append(float(result.wall_time_s))
        buffer.test_accuracy.append(float(result.test.accuracy))
        if path is not None:
            save_checkpoint(path, bhash, buffer.state())
        if on_expert is not None:
            on_expert(k, {"expert_test_accuracy": result.test.accuracy, "expert_sample_passes": result.sample_passes})
    return buffer


def _experts(real: DataBundle, net_cfg, opts: "MTTOptions", seed: int, device: torch.device,
             checkpoint_dir: Path | None, progress: Progress | None) -> tuple[list[torch.Tensor], dict]:
    """The first ``num_experts`` trajectories (trained, or reused from the buffer) and what they cost."""
    K = opts.num_experts

    def on_expert(k: int, metrics: dict) -> None:
        if progress is not None:
            progress(0, {"expert": k + 1, **metrics})

    buffer = train_experts(real, net_cfg, opts, seed, device, checkpoint_dir, on_expert)
    return buffer.trajectories[:K], {
        "sample_passes": sum(buffer.sample_passes[:K]),
        "wall_time_s": sum(buffer.wall_time_s[:K]),
        "reused": min(buffer.reused, K),
        "test_accuracy_mean": sum(buffer.test_accuracy[:K]) / K,
    }


def _student_batches(syn: torch.Tensor, y: torch.Tensor, steps: int, batch_syn: int, augment,
                     gen: torch.Generator, seed: int, iteration: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The unrolled student's minibatches: epochs over the synthetic set in seeded random order, each
    batch augmented (per sample, as the reference does inside its unrolled steps)."""
    batches, chunks = [], []
    for step in range(steps):
        if not chunks:
            chunks = list(torch.randperm(len(syn), generator=gen).split(batch_syn))
        idx = chunks.pop(0).to(syn.device)
        batches.append((augment(syn[idx], derive_seed(seed, "mtt-aug", iteration, step)), y[idx]))
    return batches


# ------------------------------------------------------------------------------------------ method
@register_distiller("mtt")
def distill_mtt(
    real: DataBundle,
    cfg: DistillConfig,
    progress: Progress | None = None,
    checkpoint_dir: Path | None = None,
) -> DistilledSet:
    opts = parse_options(MTTOptions, cfg)
    device = resolve_device(cfg.device)
    run = run_identity(cfg, real, checkpoint_dir, options=opts.model_dump(mode="json"))
    recipe, source, rhash, ckpt = run.recipe, run.source, run.hash, run.checkpoint
    net_cfg = network_for(cfg, real)
    K, M = opts.num_experts, opts.expert_epochs_match

    x0, y = init_synthetic(real, cfg, torch.Generator().manual_seed(derive_seed(cfg.seed, "mtt-init", 0)))
    syn = x0.to(device).requires_grad_(True)
    y = y.to(device)
    syn_lr = torch.tensor(float(opts.lr_teacher), device=device).requires_grad_(True)
    opt_img = torch.optim.SGD([syn], lr=cfg.lr_images, momentum=cfg.momentum)
    opt_lr = torch.optim.SGD([syn_lr], lr=opts.lr_lr, momentum=cfg.momentum)
    start, syn_passes, wall_before, expert_cost = _resume(ckpt, rhash, syn, syn_lr, opt_img, opt_lr)

    trajectories: list[torch.Tensor] = []
    if start < cfg.iterations:  # a finished run asked for again needs no experts
        trajectories, expert_cost = _experts(real, net_cfg, opts, cfg.seed, device, checkpoint_dir, progress)
    if expert_cost is None:  # iterations == 0: the initial set, no experts needed
        expert_cost = {"sample_passes": 0, "wall_time_s": 0.0, "reused": 0, "test_accuracy_mean": None}

    t0 = time.perf_counter()
    template = sample_network(net_cfg, real, derive_seed(cfg.seed, "mtt-expert-init", 0), device)
    template.requires_grad_(False)
    template.train()
    layout = ParamLayout.of(template)
    augment = make_augment(cfg, tuple(real.input_shape), draw=opts.syn_augment_draw)
    batch_syn = min(opts.batch_syn or len(syn), len(syn))

    def save(iteration: int) -> None:
        save_checkpoint(ckpt, rhash, {
            "iteration": iteration,
            "x": syn.detach().cpu().clone(),
            "syn_lr": float(syn_lr.detach()),
            "opt_img": opt_img.state_dict(),
            "opt_lr": opt_lr.state_dict(),
            "syn_passes": syn_passes,
            "wall_time_s": wall_before + time.perf_counter() - t0,
            "expert_cost": dict(expert_cost),
        })

    for it in range(start, cfg.iterations):
        gen = torch.Generator().manual_seed(derive_seed(cfg.seed, "mtt-iter", it))
        k = int(torch.randint(K, (), generator=gen))
        t = int(torch.randint(opts.max_start_epoch, (), generator=gen))
        theta_start = trajectories[k][t].to(device)
        theta_target = trajectories[k][t + M].to(device)
        batches = _student_batches(syn, y, opts.syn_steps, batch_syn, augment, gen, cfg.seed, it)
        student = unroll_student(template, layout, theta_start.clone().requires_grad_(True), batches, syn_lr)
        loss = trajectory_loss(student, theta_start, theta_target)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"mtt: trajectory loss is {float(loss)} at iteration {it}; lower lr_images or lr_lr"
            )
        opt_img.zero_grad(set_to_none=True)
        opt_lr.zero_grad(set_to_none=True)
        loss.backward(inputs=[syn, syn_lr])
        opt_img.step()
        opt_lr.step()
        with torch.no_grad():
            syn_lr.clamp_(min=opts.min_syn_lr)
        if not torch.isfinite(syn_lr):  # a finite loss can still have an overflowing gradient
            raise FloatingPointError(f"mtt: the learned step size became {float(syn_lr)} at iteration {it}; "
                                     "lower lr_lr")
        syn_passes += sum(len(b[1]) for b in batches)
        done = it + 1
        if progress is not None and (done % cfg.progress_every == 0 or done == cfg.iterations):
            progress(done, {"loss": float(loss.detach()), "syn_lr": float(syn_lr.detach()), "expert": k,
                            "start_epoch": t})
        if ckpt is not None and cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < cfg.iterations:
            save(done)
        del student, batches, loss  # free the unrolled graph before the next iteration builds one
    if ckpt is not None and cfg.iterations > start:
        save(cfg.iterations)
    cost = _cost(expert_cost, syn_passes, wall_before + time.perf_counter() - t0, float(syn_lr.detach()))
    return build_distilled_set(real, syn, y, recipe, source, cost)


def _resume(ckpt: Path | None, rhash: str, syn: torch.Tensor, syn_lr: torch.Tensor, opt_img, opt_lr
            ) -> tuple[int, int, float, dict | None]:
    """(first iteration, synthetic passes, wall time so far, the experts' cost) from the run's checkpoint."""
    state = load_checkpoint(ckpt, rhash) if ckpt is not None else None
    if state is None:
        return 0, 0, 0.0, None
    with torch.no_grad():
        syn.copy_(state["x"].to(syn.device))
        syn_lr.fill_(float(state["syn_lr"]))
    opt_img.load_state_dict(state["opt_img"])
    opt_lr.load_state_dict(state["opt_lr"])
    return int(state["iteration"]), int(state["syn_passes"]), float(state["wall_time_s"]), dict(state["expert_cost"])


def _cost(expert_cost: dict, syn_passes: int, distill_wall: float, learned_lr: float) -> dict:
    """The set's cost: the experts' (alone too, and how many were reused) plus the matching's."""
    return {
        "wall_time_s": expert_cost["wall_time_s"] + distill_wall,
        "sample_passes": int(expert_cost["sample_passes"]) + syn_passes,
        "expert_sample_passes": int(expert_cost["sample_passes"]),
        "expert_wall_time_s": expert_cost["wall_time_s"],
        "experts_reused": int(expert_cost["reused"]),
        "expert_test_accuracy_mean": expert_cost["test_accuracy_mean"],
        "distill_sample_passes": syn_passes,
        "distill_wall_time_s": distill_wall,
        "learned_lr": learned_lr,
    }
