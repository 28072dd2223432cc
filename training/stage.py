"""Stages: the units of work a trial is made of, each computed once per key and kept in the store.

A stage names itself, carries a ``version`` (bumped when its code changes what it computes), holds the
typed settings it reads and its upstream stages, and turns its inputs' artifacts into files in a
directory (``run``). Its key hashes exactly what it reads (``training.keys``), so two trials that need
the same stage share it, whichever method, sparsity or sweep they belong to. ``materialize`` is the
only way a stage gets computed: it returns the stored entry when one exists and otherwise computes
the inputs first, under the store's lease, so concurrent trials on any node compute it once.
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, ClassVar

import torch
from torch import nn

from .data import DataBundle, DataConfig, load_dataset
from .io import atomic_torch_save, atomic_write_text, load_artifact
from .keys import stage_key
from .models import ModelConfig, create_model
from .registry import Registry
from .store import ArtifactStore, CorruptEntryError, Entry, register_file_check

STAGES: Registry[type["Stage"]] = Registry("stage")


def register_stage(cls: type["Stage"]) -> type["Stage"]:
    STAGES.register(cls.name)(cls)
    return cls


def shared_stage_names() -> tuple[str, ...]:
    """The registered stages run as Ray tasks before the trials, in the order they feed each other."""
    shared = [(cls.shared_order, n) for n in STAGES.names() if (cls := STAGES.get(n)).shared_order is not None]
    return tuple(n for _, n in sorted(shared))


class Stage:
    """Subclasses are dataclasses of typed settings and upstream stages."""

    name: ClassVar[str]
    version: ClassVar[int] = 1
    # The settings it reads, defaults included: a section (data, model, train, distill, export) or one of its
    # fields (prune.sparsity). ``pipelines.defaults_pin`` pins their defaults to this stage's version.
    reads: ClassVar[tuple[str, ...]] = ()
    # Roles the pipelines act on, declared here so no other module has to name a stage:
    # ``shared_order``: computed once per key as a Ray task of its own before the trials start, in this
    # order (a set before the pre-training that trains on it); None for stages computed inside a trial.
    shared_order: ClassVar[int | None] = None
    # ``final_training``: its epochs are the trial's own training curve (the MLflow run's metrics).
    final_training: ClassVar[bool] = False
    # ``reports_progress``: an early-stopping scheduler compares trials on its epochs (final training too).
    reports_progress: ClassVar[bool] = False

    def worth_a_task(self) -> bool:
        """Whether a shared stage does enough work to be a Ray task of its own rather than run in a trial."""
        return self.shared_order is not None

    def settings(self) -> dict[str, Any]:
        """The canonical settings this stage reads (defaults and non-result fields left out)."""
        raise NotImplementedError

    def inputs(self) -> dict[str, "Stage"]:
        return {}

    def run(self, env: "StageEnv", inputs: dict[str, Entry], out: Path) -> dict[str, Any] | None:
        """Write the artifact's files into ``out``; return cost metadata (sample_passes, ...)."""
        raise NotImplementedError

    def check(self, env: "StageEnv") -> None:
        """Raise ``ValueError`` for what ``run`` would reject, from the data and a fresh model only
        (no training), so a sweep's pre-flight finds it before any trial starts."""

    def planned_passes(self, env: "StageEnv") -> int | None:
        """An estimate of the sample passes ``run`` will make (``prunetune run --check``); None when it
        cannot be told without running (a search that stops when it converges, a distiller's inner loops)."""
        return None

    @cached_property
    def key(self) -> str:
        return stage_key(self.name, self.version, self.settings(), [s.key for s in self.inputs().values()])

    def describe(self) -> str:
        return f"{self.name}/{self.key}"


@dataclass
class StageEnv:
    """What running stages needs besides their settings: the store, logging and reporting hooks.

    Nothing here is part of a key. ``on_epoch(stage, record)`` receives every training epoch of the
    stages this process computes (so a Tune trial can report them as they happen).
    """

    store: ArtifactStore
    log: Callable[[str], None] = print
    on_epoch: Callable[["Stage", dict], None] | None = None
    scratch: Path | None = None  # local folder for long stages' resumable checkpoints
    datasets: dict[str, DataBundle] = field(default_factory=dict)  # loaded once per process
    requested_by: str | None = None  # recorded in the store's index with each stage it computes

    @classmethod
    def on(cls, store: ArtifactStore, **kwargs: Any) -> "StageEnv":
        """An environment whose scratch folder sits beside a local store (none for remote stores)."""
        local = store.local_root()
        return cls(store, scratch=local / "scratch" if local is not None else None, **kwargs)

    def data(self, cfg: DataConfig) -> DataBundle:
        """One load per dataset per process (stages of one trial share it)."""
        key = cfg.model_dump_json()
        if key not in self.datasets:
            self.datasets[key] = load_dataset(cfg)
        return self.datasets[key]

    def epoch_hook(self, stage: "Stage") -> Callable[[dict], None] | None:
        if self.on_epoch is None:
            return None
        return lambda record: self.on_epoch(stage, record)


def materialize(stage: Stage, env: StageEnv) -> Entry:
    """The stage's entry: read from the store, or computed (inputs first) and stored."""
    try:
        entry = env.store.get(stage.name, stage.key)
    except CorruptEntryError as exc:  # get_or_compute below reports it and recomputes
        env.log(f"stage {stage.describe()}: {exc}")
        entry = None
    if entry is not None:
        return entry
    upstream = stage.inputs()
    inputs = {role: materialize(s, env) for role, s in upstream.items()}

    def compute(out: Path) -> dict[str, Any] | None:
        env.log(f"stage {stage.describe()}: computing")
        t0 = time.perf_counter()
        meta = dict(stage.run(env, inputs, out) or {})
        meta.setdefault("wall_time_s", time.perf_counter() - t0)
        return meta

    return env.store.get_or_compute(
        stage.name, stage.key, compute, settings=stage.settings(),
        inputs=[s.key for s in upstream.values()], version=stage.version, requested_by=env.requested_by,
    )


def walk(stage: Stage) -> list[Stage]:
    """The stage and every stage upstream of it, each once, inputs before their users."""
    seen: dict[str, Stage] = {}

    def visit(s: Stage) -> None:
        if s.key in seen:
            return
        for up in s.inputs().values():
            visit(up)
        seen[s.key] = s

    visit(stage)
    return list(seen.values())


# --------------------------------------------------------------------------------------- helpers
def seed_everything(seed: int) -> None:
    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def state_of(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _loads_weights_only(path: Path) -> None:
    load_artifact(path, "torch.load(weights_only=True) refused: file")


register_file_check(".pt", _loads_weights_only)


def load_state(entry: Entry, name: str) -> Any:
    return load_artifact(entry.file(name), f"stage file {name}", error=CorruptEntryError,
                         hint=f"; delete {entry.path} to recompute it")


def save_state(obj: Any, out: Path, name: str) -> None:
    atomic_torch_save(obj, out / name)


def read_json(entry: Entry, name: str) -> Any:
    import json

    return json.loads(entry.file(name).read_text())


def write_json(obj: Any, out: Path, name: str) -> None:
    import json

    atomic_write_text(out / name, json.dumps(obj, indent=2))


def fresh_model(data: DataBundle, model: ModelConfig, seed: int) -> nn.Module:
    """The seeded initialisation every stage of a trial agrees on."""
    seed_everything(seed)
    return create_model(model, data.input_shape, data.num_classes)
