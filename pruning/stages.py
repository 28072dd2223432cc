"""Pruning's stages: IMP levels, masks, retraining and evaluation.

Each reads only the pruning settings its method registers (``pruning.methods``), so a ``random`` mask's
key cannot move when a GraSP or PDP option does. File conventions: a mask stage writes ``mask.pt``
and ``sparsity.json``; a stage that trains writes ``model.pt`` and ``record.json``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from distill.augment import Augment
from distill.stage import load_set

from training.cost import count_flops, masked_flops, param_counts
from training.data import DataConfig, smallest_class
from training.keys import canonical
from training.models import ModelConfig
from training.stage import (
    Stage, StageEnv, fresh_model, load_state, register_stage, save_state, state_of, write_json,
)
from training.store import Entry
from training.trainer import TrainConfig, Trainer, TrainState, resolve_device, steps_per_epoch

from .ablations import invert_scores, reinitialize, shuffle_mask
from .config import PruneConfig
from .imp import rewind_state
from .mask import PRUNABLE_TYPES, Mask
from .at_init import ABLATION_SEED_OFFSET  # shuffle and reinit draw from seed + this
from .registry import get_method
from .select import select_topk

MASK_ABLATIONS = ("shuffle", "invert")  # the ablations that change a mask (reinit changes the retrain)
# What every pruning-at-init mask reads besides its method's own options (and examples_per_class when the
# method needs data).
AT_INIT_FIELDS = ("sparsity", "scope", "ignore", "allocation", "layer_densities", "channel_keep", "head_keep",
                  "rounds", "schedule", "ablation", "count_rule")


def prune_reads(fields: tuple[str, ...], *more: str) -> tuple[str, ...]:
    """A stage's ``reads`` from the prune fields its key holds (plus other sections it reads)."""
    return tuple(f"prune.{f}" for f in fields) + more


def prune_settings(prune: PruneConfig, fields: tuple[str, ...]) -> dict[str, Any]:
    """The listed prune fields that differ from their defaults (nested models canonicalised).

    ``ablation`` counts only where it changes what the fields feed: a mask stage's key ignores
    ``reinit``, so the ablation trains the very mask its baseline trains."""
    full = canonical(prune)
    out = {f: full[f] for f in fields if f in full}
    if out.get("ablation") not in (None, *MASK_ABLATIONS):
        del out["ablation"]
    return out


def method_version(name: str) -> dict[str, int]:
    """A method's registration version, for the key of the stage that makes its mask (left out at 1, so
    keys made before versions existed stay valid)."""
    version = get_method(name).version
    return {"method_version": version} if version > 1 else {}


def weight_names(model) -> list[str]:
    """What a weights-only rewind resets: every Conv/Linear weight (pruned or in ``ignore``), as the
    authors' code copies theta_0 into every pruned module's weight."""
    return [f"{n}.weight" if n else "weight" for n, m in model.named_modules()
            if isinstance(m, PRUNABLE_TYPES) and m.weight is not None]


def save_mask(mask: Mask, out: Path) -> None:
    mask.save(out / "mask.pt")
    mask.report().to_json(out / "sparsity.json")


def load_mask(entry: Entry) -> Mask:
    return Mask.load(entry.file("mask.pt"))


def _finish_mask(mask: Mask, prune: PruneConfig, seed: int, out: Path) -> None:
    if prune.ablation == "shuffle":
        mask = shuffle_mask(mask, seed=seed + ABLATION_SEED_OFFSET)
    save_mask(mask, out)


def _check_examples_per_class(data, wanted: int) -> None:
    """Scorers and calibration draw this many training examples of every class."""
    c, have = smallest_class(data)
    if have < wanted:
        raise ValueError(f"prune.examples_per_class={wanted}: class {c} has only {have} training examples; "
                         "lower it or add data")


def small_set_augment(strategy: str, input_shape: tuple[int, ...], draw: str = "sample") -> Augment | None:
    """DSA augmentation while training on a small set: 'default' for the input kind, 'none', or ops.
    ``draw='sample'`` is DSA's training mode (parameters per sample), what the authors trained with."""
    if strategy == "none":
        return None
    kind = "image" if len(input_shape) == 3 else "signal"
    return Augment(None if strategy == "default" else strategy, kind=kind, draw=draw)


# ----------------------------------------------------------------------------------------- pretrain
@register_stage
@dataclass(eq=False)
class Pretrain(Stage):
    """Dense training from the seeded init: to the rewind point k only (pruning at init needs theta_k),
    or to the end (IMP's level 0, one-shot magnitude), snapshotting theta_k on the way.

    ``small_set`` (a stage producing ``set.pt``) trains on a distilled set or subset instead of the
    real training split, as Distilled Pruning's levels do; ``augment`` is then its DSA strategy.
    Files: ``init.pt`` (theta_0), ``rewind.pt`` (the training state at k), and with ``until='end'``
    ``model.pt`` and ``record.json``.
    """

    name: ClassVar[str] = "pretrain"
    shared_order: ClassVar[int] = 2  # after the small set it may train on
    reads: ClassVar[tuple[str, ...]] = ("data", "model", "train", *prune_reads(("rewind_step", "small_train",
                                                                              "small_augment", "small_augment_draw")))
    data: DataConfig
    model: ModelConfig
    train: TrainConfig
    seed: int
    rewind_step: int = 0
    until: Literal["rewind", "end"] = "rewind"
    small_set: Stage | None = None
    augment: str = "none"
    augment_draw: Literal["sample", "batch"] = "sample"

    def settings(self) -> dict[str, Any]:
        s: dict[str, Any] = {"data": canonical(self.data), "model": canonical(self.model), "seed": self.seed,
                             "rewind_step": self.rewind_step, "until": self.until}
        if self.until == "end" or self.rewind_step > 0:  # training settings matter only if it trains
            s["train"] = canonical(self.train)
        if self.small_set is not None:
            s["augment"] = self.augment
            if self.augment != "none":
                s["augment_draw"] = self.augment_draw
        return s

    def inputs(self) -> dict[str, Stage]:
        return {"small_set": self.small_set} if self.small_set is not None else {}

    def worth_a_task(self) -> bool:
        """An at-init pretrain with k = 0 is just the seeded init: not worth a task of its own."""
        return self.until == "end" or self.rewind_step > 0

    def trainer(self, env: StageEnv, inputs: dict[str, Entry]) -> Trainer:
        """The trainer of this run; IMP's levels train with the same one."""
        real = env.data(self.data)
        if self.small_set is None:
            return Trainer(self.train, real, seed=self.seed, log=env.log)
        small = load_set(inputs["small_set"])
        return Trainer(self.train, small.as_bundle(real), seed=self.seed, log=env.log,
                       augment=small_set_augment(self.augment, real.input_shape, self.augment_draw))

    def _check_rewind(self, examples: int) -> None:
        per_epoch = steps_per_epoch(examples, self.train.batch_size)
        total = self.train.epochs * per_epoch
        if self.rewind_step > total:
            raise ValueError(
                f"prune.rewind_step={self.rewind_step} is beyond training: {self.train.epochs} epochs x "
                f"{per_epoch} iterations = {total}; allowed 0..{total}"
            )

    def check(self, env: StageEnv) -> None:
        data = env.data(self.data)
        fresh_model(data, self.model, self.seed)  # a model that cannot take this data's inputs
        self._check_rewind(self.small_set.size(data.num_classes) if self.small_set is not None else len(data.train))

    def examples(self, env: StageEnv) -> int:
        data = env.data(self.data)
        return self.small_set.size(data.num_classes) if self.small_set is not None else len(data.train)

    def planned_passes(self, env: StageEnv) -> int:
        if self.until == "rewind":
            return self.rewind_step * self.train.batch_size
        return self.train.epochs * self.examples(env)

    def run(self, env: StageEnv, inputs: dict[str, Entry], out: Path) -> dict[str, Any]:
        model = fresh_model(env.data(self.data), self.model, self.seed)
        trainer = self.trainer(env, inputs)
        self._check_rewind(len(trainer.data.train))
        init = TrainState(0, state_of(model), {})
        save_state(init.model, out, "init.pt")
        if self.until == "rewind":
            if self.rewind_step == 0:
                save_state(init.to_dict(), out, "rewind.pt")
                return {"sample_passes": 0}
            result = trainer.fit(model, start=init, stop_at=self.rewind_step, eval_every_epoch=False)
            save_state(result.final_state.to_dict(), out, "rewind.pt")
            return {"sample_passes": result.sample_passes}
        result = trainer.fit(model, start=init, snapshot_at=self.rewind_step, on_epoch=env.epoch_hook(self))
        save_state(result.snapshot.to_dict(), out, "rewind.pt")
        save_state(result.final_state.model, out, "model.pt")
        write_json(level_record(0, 1.0, result), out, "record.json")
        return {"sample_passes": result.sample_passes, "wall_time_s": result.wall_time_s}


def level_record(level: int, density: float, result) -> dict[str, Any]:
    """What an IMP level (or any trained search step) reports: its accuracy and what it cost."""
    return {"level": level, "density": density, "test_accuracy": result.test.accuracy,
            "val_accuracy": result.val.accuracy if result.val else None,
            "wall_time_s": result.wall_time_s, "sample_passes": result.sample_passes}


# -------------------------------------------------------------------------------------------- IMP
@register_stage
@dataclass(eq=False)
class ImpLevel(Stage):
    """IMP level L >= 1: prune (1-f)^L of the weights by |theta| of level L-1's trained net, reset the
    survivors to theta_k (``prune.rewind``: the whole state or the weights only) and train from iteration
    k (schedule at k; optimizer fresh or restored, ``prune.rewind_optimizer``). Every target sparsity of a
    sweep shares these levels; only the final mask depends on the target (``ImpMask``)."""

    name: ClassVar[str] = "imp_level"
    reports_progress: ClassVar[bool] = True
    level: int
    previous: Stage  # level L-1, or the pretrain for L = 1
    pretrain: Pretrain
    prune: PruneConfig

    FIELDS: ClassVar[tuple[str, ...]] = ("prune_fraction", "scope", "ignore")
    reads: ClassVar[tuple[str, ...]] = prune_reads((*FIELDS, "rewind", "rewind_optimizer"))

    def settings(self) -> dict[str, Any]:
        s = {"level": self.level, **prune_settings(self.prune, self.FIELDS)}
        # Resolved, and only where they change the result, so levels made with the whole-state rewind at
        # k = 0 (the only behaviour before these options) keep their keys.
        if self.prune.rewind_mode != "state":
            s["rewind"] = self.prune.rewind_mode
        if self.pretrain.rewind_step > 0:
            s["rewind_optimizer"] = self.prune.rewind_optimizer
        return s

    def inputs(self) -> dict[str, Stage]:
        # The pretrain's own inputs too: a level trains with the pretrain's trainer (small set included).
        return {"previous": self.previous, "pretrain": self.pretrain, **self.pretrain.inputs()}

    def planned_passes(self, env: StageEnv) -> int:  # from the rewind step to the end of the schedule
        t = self.pretrain.train
        return max(0, t.epochs * self.pretrain.examples(env) - self.pretrain.rewind_step * t.batch_size)

    def run(self, env: StageEnv, inputs: dict[str, Entry], out: Path) -> dict[str, Any]:
        p = self.prune
        prev, pre = inputs["previous"], inputs["pretrain"]
        trained = load_state(prev, "model.pt")
        model = fresh_model(env.data(self.pretrain.data), self.pretrain.model, self.pretrain.seed)
        current = load_mask(prev) if self.level > 1 else Mask.ones(model, p.ignore)
        density = (1 - p.prune_fraction) ** self.level
        mask = select_topk({n: trained[n].abs() for n in current}, density, scope=p.scope, current=current)
        rewind = TrainState.from_dict(load_state(pre, "rewind.pt"))
        start = TrainState(rewind.step, rewind_state(rewind.model, trained, weight_names(model), p.rewind_mode),
                           rewind.optimizer if p.rewind_optimizer == "resume" else {})
        trainer = self.pretrain.trainer(env, inputs)
        result = trainer.fit(model, mask=mask, start=start, on_epoch=env.epoch_hook(self))
        save_mask(mask, out)
        save_state(result.final_state.model, out, "model.pt")
        write_json(level_record(self.level, mask.density, result), out, "record.json")
        return {"sample_passes": result.sample_passes, "wall_time_s": result.wall_time_s}


@register_stage
@dataclass(eq=False)
class ImpMask(Stage):
    """IMP's final mask at the target density, from the last trained level (or the dense net: one-shot
    magnitude pruning). The retrain stage trains it, like every other method's mask."""

    name: ClassVar[str] = "imp_mask"
    source: Stage
    prune: PruneConfig
    seed: int

    FIELDS: ClassVar[tuple[str, ...]] = ("sparsity", "scope", "ignore", "ablation")
    reads: ClassVar[tuple[str, ...]] = prune_reads(FIELDS)

    def settings(self) -> dict[str, Any]:
        s = prune_settings(self.prune, self.FIELDS)
        if self.prune.ablation == "shuffle":
            s["seed"] = self.seed
        return s

    def inputs(self) -> dict[str, Stage]:
        return {"source": self.source}

    def planned_passes(self, env: StageEnv) -> int:  # magnitudes of a trained net: no data
        return 0

    def check(self, env: StageEnv) -> None:
        src = self.source if isinstance(self.source, Pretrain) else self.source.pretrain
        Mask.ones(fresh_model(env.data(src.data), src.model, src.seed), self.prune.ignore)

    def run(self, env: StageEnv, inputs: dict[str, Entry], out: Path) -> None:
        p = self.prune
        trained = load_state(inputs["source"], "model.pt")
        if isinstance(self.source, Pretrain):  # one-shot: nothing pruned yet
            src = self.source
            current = Mask.ones(fresh_model(env.data(src.data), src.model, src.seed), p.ignore)
        else:
            current = load_mask(inputs["source"])
        scores = {n: trained[n].abs() for n in current}
        if p.ablation == "invert":
            scores = invert_scores(scores, current)
        _finish_mask(select_topk(scores, p.density, scope=p.scope, current=current), p, self.seed, out)


# ---------------------------------------------------------------------------------- pruning at init
@register_stage
@dataclass(eq=False)
class ScoreMask(Stage):
    """Pruning at (or near) init: score theta_k with a registered scorer, select to the target
    density under the allocation (iteratively over ``rounds`` where the method does)."""

    name: ClassVar[str] = "mask"
    reads: ClassVar[tuple[str, ...]] = prune_reads((*AT_INIT_FIELDS, "examples_per_class"))
    method: str
    start: Pretrain  # until='rewind': theta_k
    prune: PruneConfig
    seed: int
    fields: tuple[str, ...]  # what this method reads (from its registration)

    def settings(self) -> dict[str, Any]:
        s = {"method": self.method, **prune_settings(self.prune, self.fields)}
        if self.method != "dense":  # the method's own options that differ from its defaults, and its version
            options = canonical(get_method(self.method).parse_options(self.prune.options))
            s.update({"options": options} if options else {})
            s.update(method_version(self.method))
        if "count_rule" in s:  # the rule it resolves to, so a method's registered rule is part of the key
            from .at_init import count_rule_of

            del s["count_rule"]
            rule = count_rule_of(self.prune)
            s.update({"count_rule": rule} if rule != "round" else {})
        if s.get("channel_keep"):  # coupled channels selected together since this mark (masks before: per layer)
            s["channel_selection"] = "dependency_group"
        return {**s, "seed": self.seed}

    def inputs(self) -> dict[str, Stage]:
        return {"start": self.start}

    def planned_passes(self, env: StageEnv) -> int | None:
        """0 for data-free scores; a data-driven scorer's passes depend on its rounds and iterations."""
        return 0 if self.method == "dense" or not get_method(self.method).needs_data else None

    def check(self, env: StageEnv) -> None:
        from .allocation import allocate, layer_shapes

        p = self.prune
        data = env.data(self.start.data)
        model = fresh_model(data, self.start.model, self.seed)
        shapes = layer_shapes(model, p.ignore)
        if self.method != "dense":
            spec = get_method(self.method)
            spec.scorer.check_model(model, data.input_shape)
            if p.head_keep is not None:
                from .structure import attention_heads

                groups = attention_heads(model)
                if not groups:
                    raise ValueError(f"prune.head_keep: model {self.start.model.name!r} has no attention heads")
                both = sorted(set(p.channel_keep) & {n for g in groups.values() for n in g.rows})
                if both:
                    raise ValueError(f"prune.channel_keep names {both}: their rows are heads, set by prune.head_keep")
            unknown = sorted(set(p.channel_keep) - set(shapes))
            if unknown:
                raise ValueError(f"prune.channel_keep names {unknown} are not prunable weights of this model; "
                                 f"prunable: {sorted(shapes)}")
            try:
                allocate(p.effective_allocation, p.density, shapes, p.layer_densities or None)
            except ValueError as exc:
                raise ValueError(f"prune.allocation {p.effective_allocation!r}: {exc}") from None
            if spec.needs_data:
                _check_examples_per_class(data, p.examples_per_class)

    def run(self, env: StageEnv, inputs: dict[str, Entry], out: Path) -> dict[str, Any]:
        from .at_init import mask_at_init

        p = self.prune
        data = env.data(self.start.data)
        model = fresh_model(data, self.start.model, self.seed)
        if self.method == "dense":
            save_mask(Mask.ones(model, p.ignore), out)
            return {"sample_passes": 0}
        model.load_state_dict(TrainState.from_dict(load_state(inputs["start"], "rewind.pt")).model)
        device = resolve_device(self.start.train.device)
        model.to(device)
        mask, _, passes = mask_at_init(model, p, self.seed, data=data, device=device)
        save_mask(mask, out)
        return {"sample_passes": passes}


# ---------------------------------------------------------------------------------------- PDP
@register_stage
@dataclass(eq=False)
class PdpMask(Stage):
    """Train-time pruning: the search is the training run; its hard-masked net is the result."""

    name: ClassVar[str] = "pdp"
    final_training: ClassVar[bool] = True  # trains the masked network itself: no retrain follows
    start: Pretrain  # the init
    prune: PruneConfig
    seed: int

    FIELDS: ClassVar[tuple[str, ...]] = ("sparsity", "ignore", "pdp")
    reads: ClassVar[tuple[str, ...]] = prune_reads(FIELDS, "train")

    def settings(self) -> dict[str, Any]:
        return {**prune_settings(self.prune, self.FIELDS), **method_version("pdp"), "train": canonical(self.start.train),
                "seed": self.seed}

    def inputs(self) -> dict[str, Stage]:
        return {"start": self.start}

    def check(self, env: StageEnv) -> None:
        model = fresh_model(env.data(self.start.data), self.start.model, self.seed)
        Mask.ones(model, self.prune.ignore)
        if self.prune.pdp.structure == "head":
            from .structure import attention_heads

            if not attention_heads(model):
                raise ValueError(f"prune.pdp.structure 'head': model {self.start.model.name!r} has no attention "
                                 "heads; use 'channel'")

    def run(self, env: StageEnv, inputs: dict[str, Entry], out: Path) -> dict[str, Any]:
        from .pdp import run_pdp

        p = self.prune
        data = env.data(self.start.data)
        model = fresh_model(data, self.start.model, self.seed)
        model.load_state_dict(load_state(inputs["start"], "init.pt"))
        trainer = Trainer(self.start.train, data, seed=self.seed, log=env.log)
        result = run_pdp(model, trainer, None if p.pdp.structure == "nm" else p.sparsity, p.pdp, ignore=p.ignore,
                         on_epoch=env.epoch_hook(self))
        env.log(f"pdp: soft-mask test acc {result.soft_test_accuracy:.4f}, hard-mask {result.test_accuracy:.4f}")
        save_mask(result.mask, out)
        save_state(result.trained_state, out, "model.pt")
        return {"sample_passes": result.sample_passes, "wall_time_s": result.wall_time_s}


# ---------------------------------------------------------------------------- post-training pruning
@register_stage
@dataclass(eq=False)
class PostTrainMask(Stage):
    """Wanda or SparseGPT on the dense trained net (``pruning.posttrain``): the mask, and the pruned net's
    weights (SparseGPT changes the survivors), which the one-shot result is evaluated on."""

    name: ClassVar[str] = "posttrain"
    method: str
    trained: Pretrain  # until='end'
    prune: PruneConfig
    seed: int  # which calibration examples

    FIELDS: ClassVar[tuple[str, ...]] = ("sparsity", "ignore", "examples_per_class", "post")
    reads: ClassVar[tuple[str, ...]] = prune_reads(FIELDS)

    def settings(self) -> dict[str, Any]:
        return {"method": self.method, **prune_settings(self.prune, self.FIELDS), **method_version(self.method),
                "seed": self.seed}

    def inputs(self) -> dict[str, Stage]:
        return {"trained": self.trained}

    def check(self, env: StageEnv) -> None:
        from .posttrain import as_matrix, _module_of

        p = self.prune
        data = env.data(self.trained.data)
        model = fresh_model(data, self.trained.model, self.seed)
        params = Mask.ones(model, p.ignore)
        if p.post.structure == "nm":
            for name in params:
                cols = as_matrix(_module_of(model, name)).shape[1]
                if cols % p.post.m:
                    raise ValueError(f"prune.post {p.post.n}:{p.post.m}: layer {name} has {cols} inputs per output, "
                                     f"not a multiple of {p.post.m}; add it to prune.ignore or use unstructured")
        _check_examples_per_class(data, p.examples_per_class)

    def run(self, env: StageEnv, inputs: dict[str, Entry], out: Path) -> dict[str, Any]:
        from .at_init import scoring_batches
        from .posttrain import prune_post_training

        p = self.prune
        data = env.data(self.trained.data)
        model = fresh_model(data, self.trained.model, self.seed)
        model.load_state_dict(load_state(inputs["trained"], "model.pt"))
        device = resolve_device(self.trained.train.device)
        model.to(device).eval()
        calibration = scoring_batches(data, p.examples_per_class, self.seed, device).x
        mask = prune_post_training(model, self.method, p.density, p.post, calibration, ignore=p.ignore,
                                   log=env.log)
        save_mask(mask.cpu(), out)
        save_state(state_of(model), out, "model.pt")
        return {"sample_passes": len(calibration) * len(mask)}  # one calibration pass per layer


# ------------------------------------------------------------------------------ retrain, evaluate
@register_stage
@dataclass(eq=False)
class Retrain(Stage):
    """Rewind the survivors to the start state and train with the mask fixed (every method alike).

    ``start_mode``: 'resume' continues at step k with the optimizer state there (lottery-ticket
    rewinding); 'weights' keeps step k but a fresh optimizer (the start came from a shorter run);
    'restart' starts at step 0 (the start came from training on a small set). ``keep_trained`` (a
    stage with ``model.pt``: the level the mask came from) makes the rewind weights-only: the Conv/Linear
    weights come from the start, biases and norm parameters stay as that stage trained them
    (``prune.rewind: weights``). ``reinit`` (the sanity-check ablation) trains the mask from freshly drawn
    weights instead.
    """

    name: ClassVar[str] = "retrain"
    final_training: ClassVar[bool] = True
    reads: ClassVar[tuple[str, ...]] = ("data", "model", "train")
    mask: Stage
    start: Pretrain
    data: DataConfig
    model: ModelConfig
    train: TrainConfig
    seed: int
    start_mode: Literal["resume", "weights", "restart"] = "resume"
    reinit: bool = False
    keep_trained: Stage | None = None

    def settings(self) -> dict[str, Any]:
        s = {"data": canonical(self.data), "model": canonical(self.model), "train": canonical(self.train),
             "seed": self.seed, "start_mode": self.start_mode}
        if self.keep_trained is not None and not self.reinit:
            s["rewind"] = "weights"
        return {**s, "reinit": True} if self.reinit else s

    def inputs(self) -> dict[str, Stage]:
        keep = {"keep_trained": self.keep_trained} if self.keep_trained is not None and not self.reinit else {}
        return {"mask": self.mask, "start": self.start, **keep}

    def planned_passes(self, env: StageEnv) -> int:
        resumed = self.start.rewind_step * self.train.batch_size if self.start_mode != "restart" else 0
        return max(0, self.train.epochs * len(env.data(self.data).train) - resumed)

    def run(self, env: StageEnv, inputs: dict[str, Entry], out: Path) -> dict[str, Any]:
        data = env.data(self.data)
        model = fresh_model(data, self.model, self.seed)
        mask = load_mask(inputs["mask"])
        start = TrainState.from_dict(load_state(inputs["start"], "rewind.pt"))
        if self.start_mode == "weights":
            start = TrainState(start.step, start.model, {})
        elif self.start_mode == "restart":
            start = TrainState(0, start.model, {})
        if "keep_trained" in inputs:
            trained = load_state(inputs["keep_trained"], "model.pt")
            start = TrainState(start.step, rewind_state(start.model, trained, weight_names(model), "weights"),
                               start.optimizer)
        if self.reinit:
            from training.models import create_model

            fresh = reinitialize(lambda: create_model(self.model, data.input_shape, data.num_classes),
                                 seed=self.seed + ABLATION_SEED_OFFSET)
            start = TrainState(0, state_of(fresh), {})
        trainer = Trainer(self.train, data, seed=self.seed, log=env.log)
        model.load_state_dict(start.model)
        mask.apply_(model)
        result = trainer.fit(model, mask=mask, start=start, on_epoch=env.epoch_hook(self))
        save_state(result.final_state.model, out, "model.pt")
        write_json(level_record(-1, mask.density, result), out, "record.json")
        return {"sample_passes": result.sample_passes, "wall_time_s": result.wall_time_s}


@register_stage
@dataclass(eq=False)
class Evaluate(Stage):
    """The trial's result: accuracy on the held-out splits, remaining parameters and FLOPs, checked
    against the mask (a pruned weight that is not zero is a bug, not a result)."""

    name: ClassVar[str] = "evaluate"
    reads: ClassVar[tuple[str, ...]] = ("data", "model")
    trained: Stage  # writes model.pt
    mask: Stage
    data: DataConfig
    model: ModelConfig
    train: TrainConfig  # only its device and evaluation batch size, neither part of the key
    seed: int

    def settings(self) -> dict[str, Any]:
        return {"data": canonical(self.data), "model": canonical(self.model)}

    def inputs(self) -> dict[str, Stage]:
        return {"trained": self.trained, "mask": self.mask}

    def planned_passes(self, env: StageEnv) -> int:  # forward only
        data = env.data(self.data)
        return len(data.test) + len(data.val)

    def run(self, env: StageEnv, inputs: dict[str, Entry], out: Path) -> None:
        data = env.data(self.data)
        model = fresh_model(data, self.model, self.seed)
        model.load_state_dict(load_state(inputs["trained"], "model.pt"))
        mask = load_mask(inputs["mask"])
        named = dict(model.named_parameters())
        for name, m in mask.items():
            if bool((named[name].detach()[~m] != 0).any()):
                raise AssertionError(f"pruned weights of {name} are non-zero after training")
        trainer = Trainer(self.train, data, seed=self.seed)
        model.to(trainer.device)
        test = trainer.evaluate(model, data.test)
        val = trainer.evaluate(model, data.val) if len(data.val) else None
        model.cpu()
        report = mask.report()
        params = param_counts(model, mask)
        write_json({
            "achieved_sparsity": report.sparsity, "density": report.density,
            "compression": report.compression if report.kept else None,
            "kept_params": report.kept, "prunable_params": report.total,
            "dense_params": params["dense_params"], "remaining_params": params["remaining_params"],
            "dense_flops": count_flops(model, data.input_shape), "flops": masked_flops(model, mask, data.input_shape),
            "collapsed": bool(report.collapsed), "collapsed_layers": ",".join(report.collapsed),
            "test_accuracy": test.accuracy, "test_loss": test.loss,
            "val_accuracy": val.accuracy if val else None,
        }, out, "result.json")
        report.to_json(out / "sparsity.json")
