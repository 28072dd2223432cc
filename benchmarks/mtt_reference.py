"""MTT against its reference: the project's ``distill.mtt`` and an independent re-implementation of the
authors' loop (GeorgeCazenavette/mtt-distillation ``distill.py``), side by side on the same inputs.

Why a second loop: ``distill.mtt`` is the only MTT here, so a bug in it (a wrong sign, a detached
graph, a mis-normalised loss, an lr that never learns) would show only as "MTT is weak on this data",
which the Distilled Pruning reproduction already reports. Re-deriving the authors' procedure without
``distill.mtt`` and feeding both loops identical inputs separates "the method" from "this implementation".

Shared by both arms, per distillation seed: the real data (MNIST-1D generated locally), the network
(``conv1d``), the SAME expert buffer (trained once with ``distill.mtt.train_experts``; the project's run
must report every expert as reused from it), the SAME initial synthetic set (the project's real-sample
init for that seed, handed to the reference), and the hyper-parameters: ``syn_steps``, ``expert_epochs``
(the match distance M), ``max_start_epoch``, ``lr_img``, ``lr_lr``, initial ``syn_lr`` (``lr_teacher``),
``batch_syn``, iterations, DSA inside the unrolled steps. The random draws differ (each loop draws from
its own generators, as each program would), so the sets differ; the comparison is of their quality.

The reference loop (``reference_mtt``), step for step as the authors' ``distill.py``:

* experts are visited in a shuffled order, one per iteration, reshuffled after a full pass (their
  default path: cycling through a shuffled replay-buffer file; ``--load_all`` draws uniformly instead);
* start epoch ``np.random.randint(0, max_start_epoch)``; target = trajectory[start + expert_epochs];
* the student is one flat parameter vector run through a functional forward of the network (their
  ``ReparamModule``; here ``FlatConv1d``, written out layer by layer for ``conv1d``); each of
  ``syn_steps`` steps re-draws its minibatch by popping the LAST chunk of ``randperm(n).split(batch_syn)``
  (a fresh permutation when the chunks run out), augments it with DSA (one op drawn per call from the
  global RNG, parameters drawn per sample: ``DiffAugment`` with seed -1), takes
  ``torch.autograd.grad(ce, params[-1], create_graph=True)`` and appends ``params[-1] - syn_lr * grad``;
* loss = (sum-MSE(student, target) / P) / (sum-MSE(start, target) / P), then ``loss.backward()`` through
  the whole chain into the images (SGD ``lr_img``, momentum 0.5) and into ``syn_lr`` (a plain scalar,
  SGD ``lr_lr``, momentum 0.5, never clamped);
* evaluation at ``args.lr_net = syn_lr.item()``. (Their loop runs ``Iteration + 1`` times but evaluates
  before the last update, so the set they report has had ``Iteration`` updates, as here. They also build
  a fresh random student network each iteration; its weights are never used, so it is skipped.)

Their ``ParamDiffAug`` has image ops only; for 1-D signals the reference side re-implements the four
signal ops the project uses (shift, stretch, amplitude scale, noise; ranges as ``distill.augment``)
inside the authors' ``DiffAugment`` structure, since the op set is the 1-D adaptation, not MTT.

Known differences of the project by design (none changes what is computed in expectation): the
expert is drawn uniformly per iteration (their ``--load_all`` path), the minibatch chunk is popped from
the front, every draw comes from a generator seeded by (seed, iteration, ...) so a resumed run
reproduces, and the learned lr is clamped to at least ``min_syn_lr`` (never reached here).

Both sets are judged by the same protocol (``distill.evaluate``'s ``papers`` protocol: fresh conv1d nets,
1000 epochs, SGD momentum 0.9, wd 5e-4, lr x0.1 at half, per-sample signal DSA on every batch) at EACH
set's own learned lr, nets seeded 0..nets-1; the initial (real-sample) set at lr_teacher is the floor.

Budget (2 CPU cores, 1 torch thread; the paper: 100 experts x 50 epochs, 5000 iterations, on a GPU):
MNIST-1D 10,000 samples (7,200 training), 10 per class, conv1d width 32; 8 experts x 30 epochs (SGD
0.05: at the paper's 0.01 the experts reach ~40% in 15 epochs here); 200 iterations of 20 unrolled
steps on the whole set (batch_syn 100), M = 2, max_start_epoch 20, lr_img 100, lr_lr 1e-5, lr_teacher
0.01; seeds 0, 1, 2; 5 evaluation nets per set. About 8 minutes, so it is NOT in ``run_all.py``'s
suite (which holds the performance benchmarks and must stay under 5 minutes in --quick); ``--quick``
(about 15 s, one seed, toy sizes) only checks that it runs.

    nice -n 10 .venv/bin/python benchmarks/mtt_reference.py            # writes the committed output
    nice -n 10 .venv/bin/python benchmarks/mtt_reference.py --quick    # smoke run, nothing committed
writes benchmarks/mtt_reference_output.txt and benchmarks/results/mtt_reference.json.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

OUTPUT = Path(__file__).resolve().with_name("mtt_reference_output.txt")


# ------------------------------------------------------------------------------------------ reference
class FlatConv1d:
    """``conv1d``'s forward as a function of one flat parameter vector (the role of the authors'
    ``ReparamModule``). Written layer by layer, not through ``torch.func.functional_call``, so that the
    project's flat-parameter path is checked by a different computation. Parameters are consumed in
    ``net.parameters()`` order, the order expert trajectories are stored in (theirs and ours)."""

    def __init__(self, net: nn.Module) -> None:
        self.ops: list[tuple] = []
        shapes: list[torch.Size] = []
        for m in net.layers:
            if isinstance(m, nn.Conv1d):
                self.ops.append(("conv", m.stride[0], m.padding[0], m.dilation[0], m.groups))
                shapes += [m.weight.shape, m.bias.shape]
            elif isinstance(m, nn.ReLU):
                self.ops.append(("relu",))
            else:
                raise TypeError(f"FlatConv1d handles Conv1d and ReLU layers, not {type(m).__name__}")
        shapes += [net.fc.weight.shape, net.fc.bias.shape]
        if [tuple(s) for s in shapes] != [tuple(p.shape) for p in net.parameters()]:
            raise ValueError("the network's parameter order is not layers..., fc: FlatConv1d would mis-slice it")
        self.shapes = shapes
        self.numels = [int(np.prod(s)) for s in shapes]
        self.num_params = sum(self.numels)

    def __call__(self, x: torch.Tensor, flat: torch.Tensor) -> torch.Tensor:
        chunks = [c.view(s) for c, s in zip(flat.split(self.numels), self.shapes)]
        i = 0
        for op in self.ops:
            if op[0] == "conv":
                _, stride, padding, dilation, groups = op
                x = F.conv1d(x, chunks[i], chunks[i + 1], stride, padding, dilation, groups)
                i += 2
            else:
                x = F.relu(x)
        return F.linear(x.flatten(1), chunks[i], chunks[i + 1])


# DiffAugment for (N, C, L) signals, the authors' structure: in single mode one op per call, drawn with
# torch.randint from the global RNG; with seed -1 (training mode) every sample draws its own parameters.
_SHIFT, _STRETCH, _AMPLITUDE, _NOISE_STD = 0.125, 1.2, 0.2, 0.1


def rand_shift(x: torch.Tensor) -> torch.Tensor:
    """Circular translation by an integer in [-12.5%, +12.5%] of the length: out[i] = x[i - s]."""
    length = x.size(2)
    s = max(1, int(length * _SHIFT + 0.5))
    shift = torch.randint(-s, s + 1, size=[x.size(0), 1, 1])
    idx = (torch.arange(length).view(1, 1, length) - shift) % length
    return x.gather(2, idx.expand_as(x).to(x.device))


def rand_stretch(x: torch.Tensor) -> torch.Tensor:
    """Time stretch about the centre by a log-uniform factor in [1/1.2, 1.2]: linear interpolation at
    positions u / factor (u in [-1, 1], ends aligned), clamped to the edges."""
    n, c, length = x.shape
    factor = torch.exp((torch.rand(n) * 2 - 1) * math.log(_STRETCH)).to(x)
    u = torch.linspace(-1.0, 1.0, length, device=x.device, dtype=x.dtype).view(1, length) / factor.view(n, 1)
    pos = ((u + 1) / 2 * (length - 1)).clamp(0, length - 1)
    lo = pos.floor().long().clamp(max=length - 2)
    w = (pos - lo.to(pos.dtype)).unsqueeze(1)
    left = x.gather(2, lo.unsqueeze(1).expand(n, c, length))
    right = x.gather(2, (lo + 1).unsqueeze(1).expand(n, c, length))
    return left * (1 - w) + right * w


def rand_amplitude(x: torch.Tensor) -> torch.Tensor:
    return x * (1 - _AMPLITUDE + 2 * _AMPLITUDE * torch.rand(x.size(0), 1, 1)).to(x)


def rand_noise(x: torch.Tensor) -> torch.Tensor:
    return x + _NOISE_STD * torch.randn(x.shape).to(x)


SIGNAL_FNS = {"shift": rand_shift, "stretch": rand_stretch, "scale": rand_amplitude, "noise": rand_noise}


def diff_augment_signal(x: torch.Tensor, strategy: str = "shift_stretch_scale_noise") -> torch.Tensor:
    ops = strategy.split("_")
    op = ops[torch.randint(0, len(ops), size=(1,)).item()]
    return SIGNAL_FNS[op](x).contiguous()


def reference_mtt(
    net: nn.Module,
    trajectories: list[torch.Tensor],
    image_syn: torch.Tensor,
    label_syn: torch.Tensor,
    *,
    iterations: int,
    syn_steps: int,
    expert_epochs: int,
    max_start_epoch: int,
    lr_img: float,
    lr_lr: float,
    lr_teacher: float,
    batch_syn: int | None,
    dsa: bool,
    seed: int,
) -> dict:
    """The authors' distillation loop on ``trajectories`` (each (epochs + 1, P)) from ``image_syn``.
    Global torch / NumPy / Python RNGs are seeded with ``seed`` inside a forked state (as their script
    uses the global RNGs; the caller's state is left alone). Returns the set, the learned lr, the loss
    of every iteration and the loop's wall time."""
    student_net = FlatConv1d(net)
    num_params = student_net.num_params
    if any(t.shape[1] != num_params for t in trajectories):
        raise ValueError("expert trajectories do not match the network's parameter count")
    batch_syn = batch_syn or len(image_syn)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        np_rng = np.random.RandomState(seed)
        py_rng = random.Random(seed)
        image_syn = image_syn.detach().clone().requires_grad_(True)
        syn_lr = torch.tensor(float(lr_teacher)).requires_grad_(True)
        optimizer_img = torch.optim.SGD([image_syn], lr=lr_img, momentum=0.5)
        optimizer_lr = torch.optim.SGD([syn_lr], lr=lr_lr, momentum=0.5)
        buffer = list(trajectories)
        py_rng.shuffle(buffer)
        expert_idx = 0
        losses: list[float] = []
        sample_passes = 0
        t0 = time.perf_counter()
        for _ in range(iterations):
            expert_trajectory = buffer[expert_idx]
            expert_idx += 1
            if expert_idx == len(buffer):
                expert_idx = 0
                py_rng.shuffle(buffer)
            start_epoch = int(np_rng.randint(0, max_start_epoch))
            starting_params = expert_trajectory[start_epoch].clone()
            target_params = expert_trajectory[start_epoch + expert_epochs].clone()
            student_params = [starting_params.clone().requires_grad_(True)]
            indices_chunks: list[torch.Tensor] = []
            for _step in range(syn_steps):
                if not indices_chunks:
                    indices_chunks = list(torch.split(torch.randperm(len(image_syn)), batch_syn))
                these_indices = indices_chunks.pop()
                sample_passes += len(these_indices)
                x = image_syn[these_indices]
                this_y = label_syn[these_indices]
                if dsa:
                    x = diff_augment_signal(x)
                out = student_net(x, student_params[-1])
                ce_loss = F.cross_entropy(out, this_y)
                grad = torch.autograd.grad(ce_loss, student_params[-1], create_graph=True)[0]
                student_params.append(student_params[-1] - syn_lr * grad)
            param_loss = F.mse_loss(student_params[-1], target_params, reduction="sum") / num_params
            param_dist = F.mse_loss(starting_params, target_params, reduction="sum") / num_params
            grand_loss = param_loss / param_dist
            optimizer_img.zero_grad()
            optimizer_lr.zero_grad()
            grand_loss.backward()
            optimizer_img.step()
            optimizer_lr.step()
            losses.append(float(grand_loss.detach()))
            del student_params, grand_loss
        wall = time.perf_counter() - t0
    return {"x": image_syn.detach(), "syn_lr": float(syn_lr.detach()), "losses": losses, "wall_time_s": wall,
            "sample_passes": sample_passes}


# ------------------------------------------------------------------------------------------ benchmark
def _settings(args) -> dict:
    return {
        "num_samples": args.num_samples, "ipc": args.ipc, "width": args.width, "num_experts": args.experts,
        "expert_train_epochs": args.expert_train_epochs, "expert_lr": args.expert_lr, "iterations": args.iterations,
        "syn_steps": args.syn_steps, "expert_epochs": args.expert_epochs, "max_start_epoch": args.max_start_epoch,
        "lr_img": args.lr_img, "lr_lr": args.lr_lr, "lr_teacher": args.lr_teacher, "batch_syn": args.batch_syn,
        "dsa": args.dsa, "seeds": list(args.seeds), "nets": args.nets, "eval_epochs": args.eval_epochs,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="toy sizes (about 15 s): checks it runs, commits nothing")
    ap.add_argument("--num-samples", type=int, default=10000)
    ap.add_argument("--ipc", type=int, default=10)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--experts", type=int, default=8)
    ap.add_argument("--expert-train-epochs", type=int, default=30)
    ap.add_argument("--expert-lr", type=float, default=0.05)
    ap.add_argument("--iterations", type=int, default=200)
    ap.add_argument("--syn-steps", type=int, default=20)
    ap.add_argument("--expert-epochs", type=int, default=2, help="the match distance M (the authors' name)")
    ap.add_argument("--max-start-epoch", type=int, default=20)
    ap.add_argument("--lr-img", type=float, default=100.0)
    ap.add_argument("--lr-lr", type=float, default=1e-5)
    ap.add_argument("--lr-teacher", type=float, default=0.01)
    ap.add_argument("--batch-syn", type=int, default=100)
    ap.add_argument("--no-dsa", dest="dsa", action="store_false", help="no augmentation in the unrolled steps")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--nets", type=int, default=5)
    ap.add_argument("--eval-epochs", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None, help="text output (default: the committed file, unless --quick)")
    args = ap.parse_args(argv)
    if args.quick:
        args.num_samples, args.experts, args.expert_train_epochs, args.iterations = 2000, 2, 6, 20
        args.syn_steps, args.max_start_epoch, args.seeds, args.nets, args.eval_epochs = 10, 4, [0], 2, 200

    from benchmarks.common import write
    from distill.augment import SIGNAL_STRATEGY, Augment
    from distill.evaluate import evaluate_distilled, protocol_train_config
    from distill.methods import DistillConfig, distill_dataset, sample_network
    from distill.mtt import MTTOptions, train_experts
    from training.data import DataConfig, load_dataset
    from training.models import ModelConfig

    torch.set_num_threads(args.threads)
    lines: list[str] = []

    def say(msg: str = "") -> None:
        print(msg, flush=True)
        lines.append(msg)

    t_start = time.perf_counter()
    real = load_dataset(DataConfig(name="mnist1d", num_samples=args.num_samples))
    net_cfg = ModelConfig(name="conv1d", options={"width": args.width})
    options = dict(num_experts=args.experts, expert_epochs=args.expert_train_epochs, expert_lr=args.expert_lr,
                   syn_steps=args.syn_steps, expert_epochs_match=args.expert_epochs,
                   max_start_epoch=args.max_start_epoch, lr_lr=args.lr_lr, lr_teacher=args.lr_teacher,
                   batch_syn=args.batch_syn)
    opts = MTTOptions(**options)
    augment = Augment(SIGNAL_STRATEGY, kind="signal", draw="sample")  # the evaluation's, both sets alike

    say(f"MNIST-1D num_samples={args.num_samples}: train {len(real.train)}, test {len(real.test)}; "
        f"{args.ipc} per class ({args.ipc * real.num_classes} samples); conv1d width {args.width}")
    say(f"experts (shared by both loops, one buffer per seed): {args.experts} x {args.expert_train_epochs} epochs, "
        f"SGD lr {args.expert_lr}, batch 256, no momentum")
    say(f"distillation (both loops): {args.iterations} iterations, syn_steps {args.syn_steps}, expert_epochs (M) "
        f"{args.expert_epochs}, max_start_epoch {args.max_start_epoch}, lr_img {args.lr_img}, lr_lr {args.lr_lr}, "
        f"syn_lr init {args.lr_teacher}, batch_syn {args.batch_syn}, DSA per sample in the unroll: {args.dsa}, "
        f"momentum 0.5, init from the same real samples")
    say(f"evaluation: {args.nets} fresh conv1d nets per set (seeds 0..{args.nets - 1}), {args.eval_epochs} epochs, "
        f"SGD momentum 0.9, wd 5e-4, lr x0.1 at half, batch 256, per-sample signal DSA, at each set's learned lr; "
        f"{torch.get_num_threads()} torch thread(s)")
    say("")

    arms = ("init", "project", "reference")
    accs: dict[str, list[float]] = {a: [] for a in arms}
    seed_means: dict[str, list[float]] = {a: [] for a in arms}
    lrs: dict[str, list[float]] = {"project": [], "reference": []}
    walls: dict[str, list[float]] = {"project": [], "reference": []}
    final_loss: dict[str, list[float]] = {"project": [], "reference": []}
    per_seed = []
    tail = max(1, args.iterations // 10)

    def evaluate(ds, lr: float) -> dict:
        cfg = protocol_train_config(args.eval_epochs, lr=lr, device="cpu")
        return evaluate_distilled(ds, real, cfg, nets=args.nets, model_cfg=net_cfg, augment=augment)

    with tempfile.TemporaryDirectory(prefix="mtt_reference_") as tmp:
        for i, seed in enumerate(args.seeds):
            ckpt = Path(tmp) / f"seed{seed}"
            buffer = train_experts(real, net_cfg, opts, seed, torch.device("cpu"), ckpt)
            expert_acc = statistics.fmean(buffer.test_accuracy)
            common = dict(method="mtt", ipc=args.ipc, lr_images=args.lr_img, device="cpu", network=net_cfg,
                          seed=seed, augment="default" if args.dsa else "none", checkpoint_every=0,
                          progress_every=1, options=options)
            init = distill_dataset(real, DistillConfig(iterations=0, **common))

            def run_project():
                losses = []
                ds = distill_dataset(real, DistillConfig(iterations=args.iterations, **common),
                                     progress=lambda it, m: losses.append(m["loss"]) if "loss" in m else None,
                                     checkpoint_dir=ckpt)
                if ds.cost["experts_reused"] != args.experts:
                    raise RuntimeError("the project's run did not reuse the shared expert buffer")
                return ds, losses

            def run_reference():
                template = sample_network(net_cfg, real, seed)  # structure only: parameters come from the buffer
                return reference_mtt(template, buffer.trajectories[: args.experts], init.x, init.y,
                                     iterations=args.iterations, syn_steps=args.syn_steps,
                                     expert_epochs=args.expert_epochs, max_start_epoch=args.max_start_epoch,
                                     lr_img=args.lr_img, lr_lr=args.lr_lr, lr_teacher=args.lr_teacher,
                                     batch_syn=args.batch_syn, dsa=args.dsa, seed=seed)

            if i % 2 == 0:  # alternate which loop runs first, so neither always meets a warmer machine
                (proj, proj_losses), ref = run_project(), run_reference()
            else:
                ref = run_reference()
                proj, proj_losses = run_project()
            ref_ds = dataclasses.replace(proj, x=ref["x"], content_hash="",
                                         recipe={**proj.recipe, "method": "mtt-reference"},
                                         cost={"wall_time_s": ref["wall_time_s"], "sample_passes": ref["sample_passes"],
                                               "learned_lr": ref["syn_lr"]})
            p_lr = float(proj.cost["learned_lr"])
            ev = {"init": evaluate(init, args.lr_teacher), "project": evaluate(proj, p_lr),
                  "reference": evaluate(ref_ds, ref["syn_lr"])}
            for a in arms:
                accs[a] += ev[a]["accuracies"]
                seed_means[a].append(ev[a]["mean"])
            lrs["project"].append(p_lr)
            lrs["reference"].append(ref["syn_lr"])
            walls["project"].append(float(proj.cost["distill_wall_time_s"]))
            walls["reference"].append(ref["wall_time_s"])
            final_loss["project"].append(statistics.fmean(proj_losses[-tail:]))
            final_loss["reference"].append(statistics.fmean(ref["losses"][-tail:]))
            say(f"seed {seed}: experts' mean test accuracy {100 * expert_acc:.1f}%")
            for a in arms:
                row = ", ".join(f"{100 * x:.1f}" for x in ev[a]["accuracies"])
                extra = "" if a == "init" else (
                    f"; learned lr {lrs[a][-1]:.4f}; trajectory loss (last {tail} it.) {final_loss[a][-1]:.3f}; "
                    f"distill {walls[a][-1]:.1f} s")
                say(f"  {a:9s} {100 * ev[a]['mean']:6.2f} +- {100 * ev[a]['std']:4.2f}  [{row}] at lr "
                    f"{ev[a]['lr']:.4f}{extra}")
            per_seed.append({"seed": seed, "expert_test_accuracy": buffer.test_accuracy,
                             **{a: {"accuracies": ev[a]["accuracies"], "lr": ev[a]["lr"]} for a in arms},
                             "project_loss": proj_losses, "reference_loss": ref["losses"],
                             "project_wall_s": walls["project"][-1], "reference_wall_s": walls["reference"][-1]})

    def pstd(xs):
        return statistics.pstdev(xs) if len(xs) > 1 else 0.0

    say("")
    say(f"set quality, test accuracy mean +- std over all {len(accs['project'])} evaluation nets "
        f"({len(args.seeds)} seeds x {args.nets}); in brackets the std of the per-seed means:")
    for a in arms:
        say(f"  {a:9s} {100 * statistics.fmean(accs[a]):6.2f} +- {100 * pstd(accs[a]):4.2f}  "
            f"({100 * pstd(seed_means[a]):.2f})")
    say("learned lr (syn_lr), per seed and mean:")
    for a in ("project", "reference"):
        say(f"  {a:9s} " + ", ".join(f"{v:.4f}" for v in lrs[a]) + f"  mean {statistics.fmean(lrs[a]):.4f}")
    say(f"distillation wall time per set (mean; 1 thread, niced, shared machine): project "
        f"{statistics.fmean(walls['project']):.1f} s, reference {statistics.fmean(walls['reference']):.1f} s")
    gap = 100 * (statistics.fmean(accs["project"]) - statistics.fmean(accs["reference"]))
    gain = {a: 100 * (statistics.fmean(accs[a]) - statistics.fmean(accs["init"])) for a in ("project", "reference")}
    say(f"project - reference: {gap:+.2f} points ({'within' if abs(gap) <= 2 else 'OUTSIDE'} 2 points); gain over "
        f"the initial set: project {gain['project']:+.2f}, reference {gain['reference']:+.2f}")
    say(f"total benchmark time {time.perf_counter() - t_start:.0f} s")

    out = args.out or (None if args.quick else OUTPUT)
    if out is not None:
        out.write_text("\n".join(lines) + "\n")
    figures = {
        "project_acc_mean": 100 * statistics.fmean(accs["project"]), "project_acc_std": 100 * pstd(accs["project"]),
        "reference_acc_mean": 100 * statistics.fmean(accs["reference"]),
        "reference_acc_std": 100 * pstd(accs["reference"]),
        "init_acc_mean": 100 * statistics.fmean(accs["init"]), "init_acc_std": 100 * pstd(accs["init"]),
        "gap_points": gap, "within_2_points": abs(gap) <= 2,
        "project_learned_lr": statistics.fmean(lrs["project"]),
        "reference_learned_lr": statistics.fmean(lrs["reference"]),
        "project_distill_wall_s": statistics.fmean(walls["project"]),
        "reference_distill_wall_s": statistics.fmean(walls["reference"]),
        "wall_s": time.perf_counter() - t_start,
    }
    write("mtt_reference", figures, args.quick, {"settings": _settings(args), "per_seed": per_seed})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
