"""Trainer overhead: the project's ``Trainer`` against a bare hand-written PyTorch loop (same model,
data, optimizer, batch order), and masked (90% sparse) against dense training per epoch.

Arms run interleaved, ``EPOCHS`` epochs each (one ``fit`` call, one optimizer, as in real use), ``repeats``
rounds; medians of samples per second are reported. The trainer's final evaluation (validation and
test, which the bare loop does not do) is timed on its own and subtracted.
Targets (issue 10): trainer >= 0.95x the bare loop; masked <= 1.05x dense time per epoch.

    .venv/bin/python benchmarks/trainer_overhead.py [--quick]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import interleaved, median, write  # noqa: E402
from pruning.mask import Mask  # noqa: E402
from training.data import DataConfig, load_dataset  # noqa: E402
from training.models import create_model  # noqa: E402
from training.trainer import TrainConfig, Trainer  # noqa: E402

EPOCHS = 3
CASES = {
    # name: data config, model name, options, batch size
    "conv1d_mnist1d": ({"name": "mnist1d", "num_samples": 4000}, "conv1d", {"width": 32}, 100),
    "resnet20_cifar_fake": ({"name": "fake", "num_samples": 640}, "resnet20", {"width": 16}, 128),
}


def bare_loop(model, x, y, order, batch, lr, momentum, wd) -> None:
    """What one would write by hand: shuffled minibatches, SGD with momentum, cross-entropy."""
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=wd)
    model.train()
    for _ in range(EPOCHS):
        for i in range(0, len(order) - batch + 1, batch):
            idx = order[i:i + batch]
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()


def random_mask(model, density: float, seed: int) -> Mask:
    gen = torch.Generator().manual_seed(seed)
    return Mask({n: torch.rand(m.shape, generator=gen) < density for n, m in Mask.ones(model).items()})


def measure(name: str, repeats: int) -> dict[str, float]:
    data_cfg, model_name, options, batch = CASES[name]
    data = load_dataset(DataConfig(**data_cfg))
    cfg = TrainConfig(epochs=EPOCHS, batch_size=batch, lr=0.01, momentum=0.9, weight_decay=5e-4, schedule="constant",
                      device="cpu")
    n = (len(data.train) // batch) * batch * EPOCHS  # samples the bare loop sees (full batches only)
    torch.manual_seed(0)
    model = create_model(model_name, data.input_shape, data.num_classes, **options)
    mask = random_mask(model, 0.1, 1)
    trainer = Trainer(cfg, data, seed=0)
    order = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(0))
    x, y = data.train.x, data.train.y

    def project(masked: bool):
        def run():
            return trainer.fit(model, mask=mask if masked else None, eval_every_epoch=False).wall_time_s
        return run

    def bare():
        bare_loop(model, x, y, order, batch, cfg.lr, cfg.momentum, cfg.weight_decay)

    # fit() evaluates on val/test at the end; time that separately and subtract it, so both arms
    # measure training alone.
    def evaluation():
        trainer.evaluate(model, data.val)
        trainer.evaluate(model, data.test)

    times = interleaved({"bare": bare, "trainer": project(False), "trainer_masked": project(True),
                         "evaluation": evaluation}, repeats)
    evals = median(times["evaluation"])
    t_bare, t_trainer, t_masked = (median(times[k]) for k in ("bare", "trainer", "trainer_masked"))
    t_trainer, t_masked = t_trainer - evals, t_masked - evals
    return {
        f"{name}.bare_samples_per_s": n / t_bare,
        f"{name}.trainer_samples_per_s": len(data.train) * EPOCHS / t_trainer,
        f"{name}.trainer_vs_bare": (len(data.train) * EPOCHS / t_trainer) / (n / t_bare),
        f"{name}.masked_epoch_s": t_masked / EPOCHS,
        f"{name}.dense_epoch_s": t_trainer / EPOCHS,
        f"{name}.masked_vs_dense_time": t_masked / t_trainer,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    figures: dict[str, float] = {}
    for case in CASES:
        figures.update(measure(case, 3 if args.quick else 7))
    targets = {k: (v >= 0.95 if k.endswith("trainer_vs_bare") else v <= 1.05)
               for k, v in figures.items() if k.endswith(("trainer_vs_bare", "masked_vs_dense_time"))}
    figures["targets_met"] = f"{sum(targets.values())}/{len(targets)}"
    write("trainer_overhead", figures, args.quick, {"targets": targets})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
