"""The one training loop every stage shares: masked, seeded, resumable at any iteration.

Time is counted in iterations so that a rewind point ``k`` (OpenLTH's ``rewinding_steps``) is exact,
and the learning rate is a pure function of the iteration, so resuming at step k restores the
schedule without replaying it.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .data import DataBundle, Split
from .settings import TrainConfig  # noqa: F401 (re-exported)


def steps_per_epoch(examples: int, batch_size: int) -> int:
    """Iterations per epoch (the last batch may be short): what a rewind step is counted in."""
    return math.ceil(examples / batch_size)


def resolve_device(choice: str = "auto") -> torch.device:
    """The CUDA device Ray assigned this trial (it sets CUDA_VISIBLE_DEVICES), else the CPU."""
    if choice == "cpu":
        return torch.device("cpu")
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("train.device is 'cuda' but no CUDA device is visible to this process")
        return torch.device("cuda", 0)
    return torch.device("cpu")


@dataclass
class TrainState:
    """Everything needed to continue training at ``step``: weights, optimizer state, position."""

    step: int
    model: dict[str, torch.Tensor]
    optimizer: dict

    def to_dict(self) -> dict:
        return {"step": self.step, "model": self.model, "optimizer": self.optimizer}

    @classmethod
    def from_dict(cls, d: dict) -> "TrainState":
        return cls(step=int(d["step"]), model=d["model"], optimizer=d["optimizer"])


@dataclass
class EvalResult:
    loss: float
    accuracy: float


@dataclass
class TrainResult:
    test: EvalResult
    val: EvalResult | None
    history: list[dict] = field(default_factory=list)
    snapshot: TrainState | None = None
    final_state: TrainState | None = None
    sample_passes: int = 0
    wall_time_s: float = 0.0


def _cpu_state(module_or_opt) -> dict:
    def to_cpu(x):
        if isinstance(x, torch.Tensor):
            return x.detach().to("cpu", copy=True)
        if isinstance(x, dict):
            return {k: to_cpu(v) for k, v in x.items()}
        if isinstance(x, list):
            return [to_cpu(v) for v in x]
        return x

    return to_cpu(module_or_opt.state_dict())


class Trainer:
    """Trains a model on a ``DataBundle`` with an optional fixed mask.

    Masked weights get no update: their gradients are zeroed before the step (so momentum and
    weight decay see zeros), their optimizer state is zeroed when training (re)starts, and the
    weights are re-zeroed after every step in case an optimizer moves them anyway.
    """

    def __init__(
        self,
        cfg: TrainConfig,
        data: DataBundle,
        seed: int = 0,
        device: torch.device | None = None,
        log: Callable[[str], None] | None = None,
        augment: Callable[[torch.Tensor, int], torch.Tensor] | None = None,
    ) -> None:
        """``augment(x, seed)`` replaces ``cfg.augment`` with a caller's differentiable augmentation
        (e.g. DSA on a distilled set), seeded per step so runs stay reproducible."""
        self.cfg = cfg
        self.custom_augment = augment
        self.data = data
        self.seed = seed
        self.device = device or resolve_device(cfg.device)
        self.log = log or (lambda msg: None)
        self._train_x = data.train.x.to(self.device)
        self._train_y = data.train.y.to(self.device)

    # --- schedule -------------------------------------------------------------------------------
    @property
    def steps_per_epoch(self) -> int:
        return steps_per_epoch(len(self.data.train), self.cfg.batch_size)

    @property
    def total_steps(self) -> int:
        return self.cfg.epochs * self.steps_per_epoch

    def lr_at(self, step: int) -> float:
        cfg = self.cfg
        if cfg.warmup_iterations and step < cfg.warmup_iterations:
            return cfg.lr * (step + 1) / cfg.warmup_iterations
        if cfg.schedule == "constant":
            return cfg.lr
        if cfg.schedule == "multistep":
            epoch = step / self.steps_per_epoch
            return cfg.lr * cfg.gamma ** sum(epoch >= m for m in cfg.milestones)
        progress = step / max(1, self.total_steps)
        return 0.5 * cfg.lr * (1 + math.cos(math.pi * progress))

    def make_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        cfg = self.cfg
        params = [p for p in model.parameters() if p.requires_grad]
        if cfg.optimizer == "sgd":
            return torch.optim.SGD(
                params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay
            )
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)

    # --- data -----------------------------------------------------------------------------------
    def _epoch_order(self, epoch: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(len(self.data.train), generator=gen).to(self.device)

    def _augment(self, x: torch.Tensor, step: int) -> torch.Tensor:
        if self.custom_augment is not None:
            return self.custom_augment(x, self.seed * 1_000_003 + step)
        if self.cfg.augment == "none" or x.dim() != 4:
            return x
        gen = torch.Generator(device=x.device).manual_seed(self.seed * 7919 + step)
        flip = torch.rand(x.shape[0], generator=gen, device=x.device) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        pad = 4
        padded = F.pad(x, (pad, pad, pad, pad))
        h, w = x.shape[-2:]
        dx, dy = (torch.randint(0, 2 * pad + 1, (2,), generator=gen, device=x.device)).tolist()
        return padded[..., dy : dy + h, dx : dx + w]

    # --- evaluation -----------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, model: nn.Module, split: Split) -> EvalResult:
        if len(split) == 0:
            return EvalResult(float("nan"), float("nan"))
        was_training = model.training
        model.eval()
        loss_sum, correct = 0.0, 0
        for i in range(0, len(split), self.cfg.eval_batch_size):
            x = split.x[i : i + self.cfg.eval_batch_size].to(self.device)
            y = split.y[i : i + self.cfg.eval_batch_size].to(self.device)
            out = model(x).float()
            loss_sum += F.cross_entropy(out, y, reduction="sum").item()
            correct += (out.argmax(1) == y).sum().item()
        model.train(was_training)
        return EvalResult(loss_sum / len(split), correct / len(split))

    # --- training -------------------------------------------------------------------------------
    def fit(
        self,
        model: nn.Module,
        mask: dict[str, torch.Tensor] | None = None,
        start: TrainState | None = None,
        snapshot_at: int | None = None,
        stop_at: int | None = None,
        eval_every_epoch: bool = True,
        on_epoch: Callable[[dict], None] | None = None,
        on_step: Callable[[int], None] | None = None,
    ) -> TrainResult:
        """Train from ``start`` (weights, optimizer state and step) or from the model as it is.

        ``snapshot_at`` = k returns the full state at iteration k: the rewind point. k=0 is the
        state before any update. ``stop_at`` ends training early at that iteration (to reach a
        rewind point without paying for the whole run); ``final_state`` then holds the state there.
        ``on_step(step)`` runs before every optimizer step (train-time pruning updates its targets there).
        """
        t0 = time.perf_counter()
        model.to(self.device)
        optimizer, step = self._start(model, start)
        named = dict(model.named_parameters())
        masks = self._apply_mask(named, optimizer, mask)
        for name, k in (("rewind step", snapshot_at), ("stop step", stop_at)):
            if k is not None and k > self.total_steps:
                raise ValueError(f"{name} {k} is beyond the {self.total_steps} iterations of training")
        end = self.total_steps if stop_at is None else stop_at
        snapshot = None
        history: list[dict] = []
        sample_passes = 0
        model.train()
        spe = self.steps_per_epoch
        finite: torch.Tensor | None = None
        final_val: EvalResult | None = None
        while step < end:
            epoch, offset = divmod(step, spe)
            order = self._epoch_order(epoch)
            for b in range(offset, min(spe, offset + end - step)):
                if snapshot_at is not None and step == snapshot_at:
                    snapshot = TrainState(step, _cpu_state(model), _cpu_state(optimizer))
                idx = order[b * self.cfg.batch_size : (b + 1) * self.cfg.batch_size]
                if on_step is not None:
                    on_step(step)
                loss, finite = self._step(model, optimizer, named, masks, idx, step, finite)
                sample_passes += len(idx)
                step += 1
            if finite is not None and not bool(finite):
                raise FloatingPointError(f"training diverged by iteration {step} (a non-finite loss in epoch "
                                         f"{epoch + 1}); lower train.lr")
            finite = None
            if (eval_every_epoch and step % spe == 0) or step >= end:
                record = self._epoch_record(model, epoch, step, loss)
                if step >= end and "val_accuracy" in record:
                    final_val = EvalResult(record["val_loss"], record["val_accuracy"])  # not evaluated twice
                history.append(record)
                if on_epoch:
                    on_epoch(record)
        if snapshot_at is not None and snapshot is None and step == snapshot_at:
            snapshot = TrainState(step, _cpu_state(model), _cpu_state(optimizer))
        if final_val is None and len(self.data.val):
            final_val = self.evaluate(model, self.data.val)
        return TrainResult(
            test=self.evaluate(model, self.data.test),
            val=final_val,
            history=history,
            snapshot=snapshot,
            final_state=TrainState(step, _cpu_state(model), _cpu_state(optimizer)),
            sample_passes=sample_passes,
            wall_time_s=time.perf_counter() - t0,
        )

    def _start(self, model: nn.Module, start: TrainState | None) -> tuple[torch.optim.Optimizer, int]:
        """A fresh optimizer, or the weights, optimizer state and step of ``start``."""
        optimizer = self.make_optimizer(model)
        if start is None:
            return optimizer, 0
        model.load_state_dict(start.model)
        if start.optimizer:
            optimizer.load_state_dict(start.optimizer)
        return optimizer, start.step

    def _apply_mask(self, named: dict[str, nn.Parameter], optimizer: torch.optim.Optimizer,
                    mask: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor]:
        """Zero the pruned weights and their optimizer state (momentum must not revive them)."""
        if mask is None:
            return {}
        masks = {n: m.to(self.device, named[n].dtype) for n, m in mask.items()}
        with torch.no_grad():
            for n, m in masks.items():
                named[n].mul_(m)
                for v in optimizer.state.get(named[n], {}).values():
                    if isinstance(v, torch.Tensor) and v.shape == m.shape:
                        v.mul_(m)
        return masks

    def _step(self, model: nn.Module, optimizer: torch.optim.Optimizer, named: dict[str, nn.Parameter],
              masks: dict[str, torch.Tensor], idx: torch.Tensor, step: int,
              finite: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One optimizer step on the batch ``idx`` with the mask held; returns the loss and the running
        finiteness flag (on a GPU checked once per epoch: a per-step check would wait for the device)."""
        x = self._augment(self._train_x[idx], step)
        y = self._train_y[idx]
        for group in optimizer.param_groups:
            group["lr"] = self.lr_at(step)
        optimizer.zero_grad(set_to_none=True)
        if self.cfg.amp and self.device.type == "cuda":
            with torch.autocast("cuda", dtype=torch.bfloat16):
                out = model(x)
        else:  # no autocast context per step where it would do nothing
            out = model(x)
        loss = F.cross_entropy(out.float(), y)
        if self.device.type != "cpu":
            finite = torch.isfinite(loss) if finite is None else finite & torch.isfinite(loss)
        elif not torch.isfinite(loss):
            raise FloatingPointError(f"training diverged at iteration {step} (loss={loss.item()}); lower train.lr")
        loss.backward()
        for n, m in masks.items():
            if named[n].grad is not None:
                named[n].grad.mul_(m)
        optimizer.step()
        with torch.no_grad():
            for n, m in masks.items():
                named[n].mul_(m)
        return loss, finite

    def _epoch_record(self, model: nn.Module, epoch: int, step: int, loss: torch.Tensor) -> dict:
        record = {"epoch": epoch + 1, "step": step, "train_loss": loss.item(), "lr": self.lr_at(step - 1)}
        if len(self.data.val):
            v = self.evaluate(model, self.data.val)
            record.update(val_loss=v.loss, val_accuracy=v.accuracy)
        return record
