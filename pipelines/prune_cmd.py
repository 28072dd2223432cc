"""``prunetune prune``: score one model and write its mask, without training.

The model is freshly initialised (seeded) or loaded from ``--checkpoint``; the mask comes from
``pruning.at_init.mask_at_init``, the very function a sweep's ``mask`` stage calls, with the settings
validated by ``PruneConfig`` and the method's own options model (``--option key=value``), so a setting
means (and fails) the same here as in an experiment file. Methods whose search needs training (``imp``,
``pdp``, ``dense``, ...) belong to ``prunetune run``.

Writes ``<out>/mask.pt`` (``Mask.save``) and ``<out>/sparsity.json``; each file is written atomically,
and nothing is written unless every input checked out.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from .cli_errors import fail as _fail

# PruneConfig field -> the flag that sets it, for error messages.
_FLAGS = {
    "method": "--method", "sparsity": "--sparsity", "rounds": "--rounds", "schedule": "--schedule",
    "scope": "--scope", "allocation": "--allocation", "layer_densities": "--layer-density",
    "examples_per_class": "--examples-per-class", "ignore": "--ignore", "options": "--option",
    "channel_keep": "--channel-keep", "head_keep": "--head-keep", "ablation": "--ablation",
    "count_rule": "--count-rule",
}


class PruneInputError(ValueError):
    """Bad command-line input, phrased for the user."""


def _at_init_methods() -> str:
    """Every registered pruning-at-init method, and the installed plugins' methods by name (their modules
    are imported only when one is used, so ``--help`` stays fast)."""
    from pruning.registry import METHODS
    from training.registry import entry_points

    names = [n for n in METHODS.names() if METHODS.get(n).at_init]
    extra = sorted({ep.name for ep in entry_points("prunetune.methods")} - set(METHODS.names()))
    return ", ".join(names) + (f"; from installed plugins: {', '.join(extra)}" if extra else "")


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "prune",
        help="score an untrained (or loaded) model and write its mask, without training",
        description="Prune at initialisation: write DIR/mask.pt and DIR/sparsity.json for one model. "
        "The same function builds the mask as a sweep's mask stage. `prunetune list` shows every "
        "method's options.",
    )
    p.add_argument("--model", required=True, help="model name (see `prunetune list`), e.g. vgg16_bn, mlp, tv:resnet18")
    p.add_argument("--model-options", metavar="JSON", help='model options as a JSON object, e.g. \'{"widths": [64]}\'')
    p.add_argument("--dataset", help="dataset the model is built for; needed by data-driven methods")
    p.add_argument("--input-shape", metavar="C,H,W", help="input shape without the batch dimension (C,H,W or C,L), instead of --dataset")
    p.add_argument("--num-classes", type=int, metavar="K", help="number of classes, with --input-shape")
    p.add_argument("--method", required=True, help="pruning-at-init method: " + _at_init_methods())
    p.add_argument("--option", action="append", metavar="KEY=VALUE",
                   help="the method's own option (prune.options.KEY; value read as YAML), e.g. temperature=50 (repeatable)")
    p.add_argument("--plugin", action="append", metavar="MODULE",
                   help="import this module first (a method, model or dataset of your own; repeatable)")
    p.add_argument("--sparsity", required=True, type=float, help="fraction of prunable weights removed, in (0, 1)")
    p.add_argument("--rounds", type=int, help="scoring rounds (default per method)")
    p.add_argument("--schedule", help="density schedule over rounds: exponential (default) or linear")
    p.add_argument("--scope", help="global (default) or layerwise")
    p.add_argument("--allocation", help="how density is shared by layers: global, uniform, erk, explicit, scaled")
    p.add_argument("--layer-density", action="append", metavar="NAME=D", help="with --allocation explicit/scaled: one per prunable weight (repeatable)")
    p.add_argument("--channel-keep", action="append", metavar="NAME=F",
                   help="structured: keep this fraction of the layer's output channels (repeatable)")
    p.add_argument("--head-keep", type=float, metavar="F", help="structured: fraction of every attention module's heads kept")
    p.add_argument("--ablation", help="sanity check on the mask: shuffle or invert (reinit changes training, not masks)")
    p.add_argument("--count-rule", help="exact (round(d*N), default) or reference (the method's published rule)")
    p.add_argument("--ignore", action="append", metavar="NAME", help="prunable weight kept dense, e.g. fc.weight (repeatable)")
    p.add_argument("--examples-per-class", type=int, metavar="N", help="data-driven methods: class-balanced examples (default 10)")
    p.add_argument("--checkpoint", metavar="FILE", help="state_dict to load into the model before scoring")
    p.add_argument("--seed", type=int, default=0, help="seeds the initialisation, the scorer and the example sample")
    p.add_argument("--data-root", default="data", metavar="DIR", help="where datasets live (default ./data)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where to score (default auto)")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory for mask.pt and sparsity.json")
    p.set_defaults(func=cmd_prune)
    return p


def cmd_prune(args: argparse.Namespace) -> int:
    try:
        job = _prepare(args)
    except PruneInputError as exc:
        return _fail(str(exc))
    return _run(job)


# --------------------------------------------------------------------------------------------- checking
def _pairs(items: list[str] | None, flag: str, parse=float) -> dict[str, Any] | None:
    if not items:
        return None
    out: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise PruneInputError(f"{flag} {item!r}: expected NAME=VALUE")
        try:
            out[name.strip()] = parse(value)
        except ValueError:
            raise PruneInputError(f"{flag} {item!r}: {value!r} is not a number") from None
    return out


def _yaml_value(text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError as exc:
        raise ValueError(f"not valid YAML: {exc}") from None


def _prune_config(args: argparse.Namespace):
    from pydantic import ValidationError

    from pruning.config import PruneConfig

    fields: dict[str, Any] = {"method": args.method, "sparsity": args.sparsity}
    optional = {
        "rounds": args.rounds, "schedule": args.schedule, "scope": args.scope, "allocation": args.allocation,
        "examples_per_class": args.examples_per_class, "ignore": args.ignore, "head_keep": args.head_keep,
        "ablation": args.ablation, "count_rule": args.count_rule,
        "layer_densities": _pairs(args.layer_density, "--layer-density"),
        "channel_keep": _pairs(args.channel_keep, "--channel-keep"),
        "options": _pairs(args.option, "--option", _yaml_value),
    }
    fields.update({k: v for k, v in optional.items() if v is not None})
    if fields.get("ablation") == "reinit":
        raise PruneInputError("--ablation reinit redraws the weights the mask is trained from; it does not change "
                              "a mask (use shuffle or invert, or 'prunetune run')")
    try:
        return PruneConfig.model_validate(fields)
    except ValidationError as err:
        lines = []
        for e in err.errors():
            loc = [str(p) for p in e["loc"]]
            sub = (e.get("ctx") or {}).get("sub_loc", "")
            flag = _FLAGS.get(sub.split(".")[0] if sub else (loc[0] if loc else ""), loc[0] if loc else "options")
            if sub.startswith("options."):
                flag = f"--option {sub.removeprefix('options.')}"
            msg = e["msg"].removeprefix("Value error, ")
            bad = e.get("input")
            shown = "" if isinstance(bad, (dict, PruneConfig)) or e["type"] == "missing" or sub else f" (got {bad!r})"
            lines.append(f"  {flag}: {msg}{shown}")
        raise PruneInputError("invalid pruning options:\n" + "\n".join(lines)) from None


def _input_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(s) for s in text.replace(" ", "").split(","))
    except ValueError:
        raise PruneInputError(f"--input-shape {text!r}: expected comma-separated integers, e.g. 3,32,32 or 1,40") from None
    if not shape or any(s < 1 for s in shape):
        raise PruneInputError(f"--input-shape {text!r}: sizes must be positive integers")
    return shape


def _model_config(args: argparse.Namespace):
    from pydantic import ValidationError

    from training.settings import ModelConfig

    options: dict[str, Any] = {}
    if args.model_options:
        try:
            options = json.loads(args.model_options)
        except json.JSONDecodeError as exc:
            raise PruneInputError(f"--model-options is not valid JSON: {exc}") from None
        if not isinstance(options, dict):
            raise PruneInputError("--model-options must be a JSON object, e.g. '{\"width\": 16}'")
    try:
        return ModelConfig(name=args.model, options=options)
    except ValidationError as err:
        msgs = "; ".join(e["msg"].removeprefix("Value error, ") for e in err.errors())
        raise PruneInputError(f"--model {args.model!r}: {msgs}") from None


def _writable_out(out: Path) -> Path:
    """Checked before any scoring: a read-only place would otherwise fail only at the end, as an OSError."""
    from .config import ConfigError
    from .preflight import check_writable_dir

    try:
        check_writable_dir(out, f"--out {out}", "choose a writable output directory with --out")
    except ConfigError as exc:
        raise PruneInputError(str(exc)) from None
    return out


def _read_checkpoint(path: Path) -> dict:
    import torch

    from pruning.mask import load_artifact

    if not path.is_file():
        raise PruneInputError(f"--checkpoint {path} does not exist")
    data = load_artifact(path, "--checkpoint", error=PruneInputError,
                         hint=": not a torch.save file, truncated, or holding objects other than tensors")
    if isinstance(data, dict) and isinstance(data.get("model"), dict):  # a saved TrainState
        data = data["model"]
    if not isinstance(data, dict) or not data or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in data.items()
    ):
        raise PruneInputError(f"--checkpoint {path} does not hold a state_dict (a mapping of names to tensors)")
    return data


def _load_into(model, state: dict, path: Path, model_name: str) -> None:
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {_few(missing)}")
        if unexpected:
            parts.append(f"unexpected {_few(unexpected)}")
        if wrong:
            parts.append("shape mismatch " + _few(
                [f"{k} {tuple(state[k].shape)} vs model {tuple(own[k].shape)}" for k in wrong]))
        raise PruneInputError(f"--checkpoint {path} does not match model {model_name!r}: " + "; ".join(parts))
    model.load_state_dict(state)


def _few(items: list[str], n: int = 5) -> str:
    return ", ".join(items[:n]) + (f" (+{len(items) - n} more)" if len(items) > n else "")


def _prepare(args: argparse.Namespace) -> dict:
    """Check every input and build what scoring needs; raises PruneInputError, writes nothing. Every
    argument is checked before torch is imported (seconds on a loaded machine)."""
    from training.plugins import PluginError, load_plugins

    try:
        load_plugins(args.plugin or [], [str(Path.cwd())])
    except PluginError as exc:
        raise PruneInputError(f"--plugin: {exc}") from None
    prune = _prune_config(args)
    spec = _at_init_spec(prune)
    out = _writable_out(Path(args.out))
    data_cfg, shape, num_classes = _input_choice(args, prune, spec)
    model_cfg = _model_config(args)
    checkpoint = _checkpoint_path(args)
    seed = int(args.seed)
    if spec.plan is not None:  # torch from here on
        _refuse_training_plan(prune, spec, seed, data_cfg, model_cfg)
    device = _device(args)
    data = _load_data(args, data_cfg)
    if data is not None:
        shape, num_classes = tuple(data.input_shape), int(data.num_classes)
    model = _seeded_model(args, model_cfg, shape, num_classes, seed, checkpoint).to(device)
    _check_selection(model, shape, prune, spec, data)
    return {
        "args": args, "prune": prune, "model": model, "data": data, "shape": shape, "num_classes": num_classes,
        "out": out, "seed": seed, "checkpoint": checkpoint, "model_cfg": model_cfg, "device": device,
    }


def _at_init_spec(prune):
    from pruning.registry import get_method

    spec = get_method(prune.method)
    if not spec.at_init:
        raise PruneInputError(
            f"--method {prune.method!r} searches its mask by training or does not prune; 'prunetune prune' scores "
            f"without training: use one of {_at_init_methods()}, or 'prunetune run' for the others"
        )
    return spec


def _input_choice(args: argparse.Namespace, prune, spec) -> tuple[Any, tuple[int, ...] | None, int | None]:
    """(data config, input shape, classes): a dataset fixes its own shape and classes once loaded."""
    if args.dataset and args.input_shape:
        raise PruneInputError("give either --dataset or --input-shape (with --num-classes), not both")
    if args.num_classes is not None and not args.input_shape:
        raise PruneInputError("--num-classes goes with --input-shape (a dataset fixes its own classes)")
    if spec.needs_data and not args.dataset:
        raise PruneInputError(
            f"--method {prune.method} scores with training examples ({prune.examples_per_class} per class): "
            "give --dataset"
        )
    if args.dataset:
        from pydantic import ValidationError

        from training.settings import DataConfig

        try:
            return DataConfig(name=args.dataset, root=args.data_root), None, None
        except ValidationError as err:
            msgs = "; ".join(e["msg"].removeprefix("Value error, ") for e in err.errors())
            raise PruneInputError(f"--dataset {args.dataset!r}: {msgs}") from None
    if args.input_shape:
        shape = _input_shape(args.input_shape)
        if args.num_classes is None or args.num_classes < 1:
            raise PruneInputError("--input-shape needs --num-classes K (K >= 1)")
        return None, shape, int(args.num_classes)
    raise PruneInputError("give --dataset, or --input-shape C,H,W (or C,L) with --num-classes")


def _checkpoint_path(args: argparse.Namespace) -> Path | None:
    checkpoint = Path(args.checkpoint) if args.checkpoint else None
    if checkpoint is not None and not checkpoint.is_file():
        what = "is a directory" if checkpoint.is_dir() else "is not a regular file" if checkpoint.exists() \
            else "does not exist"
        raise PruneInputError(f"--checkpoint {checkpoint} {what}; give a file written by torch.save")
    return checkpoint


def _refuse_training_plan(prune, spec, seed: int, data_cfg, model_cfg) -> None:
    """A scorer whose settings ask for training first (magnitude at: trained) is for ``prunetune run``."""
    from pruning.methods import TrialSettings, plan_method
    from pruning.stages import ScoreMask
    from training.settings import DataConfig, TrainConfig

    plan = plan_method(TrialSettings(seed, data_cfg or DataConfig(name="fake"), model_cfg, TrainConfig(), prune))
    if not isinstance(plan.mask, ScoreMask):
        raise PruneInputError(f"--method {prune.method} with options {prune.options} trains before it prunes; "
                              "'prunetune prune' scores without training: use 'prunetune run'")


def _device(args: argparse.Namespace):
    from training.trainer import resolve_device

    try:
        return resolve_device(args.device)
    except RuntimeError as exc:
        raise PruneInputError(f"--device {args.device}: {exc}") from None


def _load_data(args: argparse.Namespace, data_cfg):
    if data_cfg is None:
        return None
    from training.data import load_dataset

    try:
        return load_dataset(data_cfg)
    except (FileNotFoundError, ValueError) as exc:
        raise PruneInputError(f"--dataset {args.dataset!r}: {exc}") from None


def _seeded_model(args: argparse.Namespace, model_cfg, shape, num_classes: int, seed: int, checkpoint: Path | None):
    """The same seeded initialisation as a trial's stages (``training.stage.fresh_model``), or the checkpoint."""
    from training.models import create_model
    from training.stage import seed_everything

    seed_everything(seed)
    try:
        model = create_model(model_cfg, shape, num_classes)
    except ValueError as exc:
        raise PruneInputError(f"--model {args.model!r}: {exc}") from None
    if checkpoint is not None:
        _load_into(model, _read_checkpoint(checkpoint), checkpoint, args.model)
    return model


def _check_selection(model, shape, prune, spec, data) -> None:
    """What scoring would reject: the model, the per-layer settings, too few examples per class."""
    from pruning.allocation import allocate, layer_shapes

    try:
        spec.scorer.check_model(model, shape)
        shapes = layer_shapes(model, prune.ignore)
        unknown = sorted(set(prune.channel_keep) - set(shapes))
        if unknown:
            raise ValueError(f"--channel-keep names {unknown}, which are not prunable weights of this model; "
                             f"prunable: {sorted(shapes)}")
        allocate(prune.effective_allocation, prune.density, shapes, prune.layer_densities or None)
        if data is not None and spec.needs_data:
            from training.data import smallest_class

            c, have = smallest_class(data)
            if have < prune.examples_per_class:
                raise ValueError(f"--examples-per-class {prune.examples_per_class}: class {c} has only {have} "
                                 "training examples")
    except ValueError as exc:
        raise PruneInputError(str(exc)) from None


# --------------------------------------------------------------------------------------------- scoring
def _run(job: dict) -> int:
    from pruning.at_init import mask_at_init
    from pruning.mask import atomic_write_text
    from pruning.registry import get_method
    from pruning.select import kept_count

    prune, args = job["prune"], job["args"]
    scope = "global" if prune.effective_allocation == "global" else "layerwise"
    t0 = time.perf_counter()
    try:
        mask, rounds, _ = mask_at_init(job["model"], prune, job["seed"], data=job["data"], input_shape=job["shape"],
                                       num_classes=job["num_classes"], device=job["device"])
    except ValueError as exc:  # e.g. a scorer refusing the model; still nothing written
        return _fail(f"{prune.method} could not score model {args.model!r}: {exc}")
    wall = time.perf_counter() - t0

    report = mask.report()
    if prune.effective_allocation == "global" and not (prune.channel_keep or prune.head_keep):
        from pruning.at_init import count_rule_of

        expected = kept_count(prune.density, report.total, count_rule_of(prune))
        assert report.kept == expected, f"kept {report.kept} weights, expected exactly {expected}"
    summary = {
        **report.to_dict(),
        "method": prune.method,
        "model": args.model,
        "model_options": job["model_cfg"].options,
        "dataset": args.dataset,
        "input_shape": list(job["shape"]),
        "num_classes": job["num_classes"],
        "target_sparsity": prune.sparsity,
        "rounds": rounds,
        "schedule": prune.schedule,
        "scope": scope,
        "allocation": prune.effective_allocation,
        "examples_per_class": prune.examples_per_class if get_method(prune.method).needs_data else None,
        "options": prune.options,
        "channel_keep": prune.channel_keep,
        "head_keep": prune.head_keep,
        "ablation": prune.ablation,
        "ignore": list(prune.ignore),
        "checkpoint": str(job["checkpoint"]) if job["checkpoint"] else None,
        "seed": job["seed"],
        "device": str(job["device"]),
        "wall_time_s": wall,
    }
    out: Path = job["out"]
    mask.save(out / "mask.pt")
    atomic_write_text(out / "sparsity.json", json.dumps(summary, indent=2))

    compression = f"{report.compression:.1f}x" if report.kept else "inf"
    collapsed = ",".join(report.collapsed) if report.collapsed else "none"
    print(
        f"{prune.method} {args.model}: kept {report.kept}/{report.total} (density {report.density:.4g}, "
        f"sparsity {report.sparsity:.4g}, {compression}), {rounds} round(s), collapsed: {collapsed}, "
        f"{wall:.2f}s -> {out / 'mask.pt'}"
    )
    return 0


__all__ = ["add_parser", "cmd_prune"]
