"""``prunetune distill CONFIG --out DIR [--eval]``: make one distilled set and, optionally, measure it.

The set is the same artifact the pipeline's distilled_imp trials use (same store layout and key), so
a set made here is reused by a sweep pointed at the same ``--out``.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from distill.config import DistillConfig
from training.settings import DataConfig, ModelConfig, TrainConfig


class QualityConfig(BaseModel):
    """SPEC's protocol: fresh nets trained on the set, tested on the real test split."""

    model_config = ConfigDict(extra="forbid")
    nets: int = Field(3, ge=1)
    model: ModelConfig | None = None  # default: the network the set was distilled with
    train: TrainConfig | None = None  # default: the protocol's (plain: SGD 0.01, momentum 0.9, wd 5e-4, 300 epochs)
    protocol: Literal["plain", "papers"] = "plain"  # papers: 1000 epochs, per-sample DSA, MTT's learned lr


class DistillRunConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    plugins: list[str] = Field(default_factory=list)  # your own dataset, model or distiller (as in a sweep)
    plugin_paths: list[str] = Field(default_factory=list)
    name: str = "distill"
    data: DataConfig
    distill: DistillConfig
    quality: QualityConfig = Field(default_factory=QualityConfig)
    tracking: dict = Field(default_factory=dict)


def add_parser(sub) -> None:
    p = sub.add_parser("distill", help="distil a dataset into a small synthetic set (optionally evaluate it)")
    p.add_argument("config", help="YAML with data:, distill: and optional quality: sections")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--eval", action="store_true", help="train fresh nets on the set and report test accuracy")
    p.add_argument("--eval-protocol", choices=get_args(QualityConfig.model_fields["protocol"].annotation), default=None,
                   help="plain: 300 epochs, no augmentation; papers: 1000 epochs with per-sample DSA and an MTT "
                   "set's learned lr, as DSA/DM/MTT report (default: quality.protocol)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config value (repeatable)")
    p.set_defaults(func=cmd_distill)


def cmd_distill(args: argparse.Namespace) -> int:
    from .cli_errors import fail as _fail

    try:  # a ConfigError is a ValueError: the config's problem, or the data's, in one line
        cfg = _read_config(args)
        data_cfg = cfg.data.model_copy(update={"root": str(Path(cfg.data.root).resolve())})
        from training.data import load_dataset

        real = load_dataset(data_cfg)
    except (FileNotFoundError, ValueError) as exc:
        return _fail(str(exc))

    from distill.stage import Distill, load_set
    from training.io import atomic_write_text
    from training.stage import StageEnv, materialize
    from training.store import ArtifactStore

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    env = StageEnv.on(ArtifactStore(out / "store"), log=print)
    env.datasets[data_cfg.model_dump_json()] = real  # already loaded (and checked) above
    entry = materialize(Distill(data=data_cfg, cfg=cfg.distill), env)
    ds, path, made = load_set(entry), entry.file("set.pt"), not entry.cached
    print(f"{'made' if made else 'reused'} {path} ({len(ds)} samples, cost {ds.cost.get('wall_time_s', 0):.1f}s, "
          f"{ds.cost.get('sample_passes', 0)} sample passes)")
    summary = {"path": str(path), "picture": str(entry.file("set.png")), "content_hash": ds.content_hash,
               "samples": len(ds), "recipe": ds.recipe, "cost": ds.cost, "made_now": made, "stage_key": entry.key}
    if args.eval:
        summary["quality"] = _evaluate(cfg, ds, real, args.eval_protocol or cfg.quality.protocol)
    summary["wall_time_s"] = time.perf_counter() - t0
    atomic_write_text(out / "distill_summary.json", json.dumps(summary, indent=2, default=str))
    _track(cfg, data_cfg, ds, summary, [path, entry.file("set.png"), out / "distill_summary.json"], out)
    print(f"summary: {out / 'distill_summary.json'}")
    return 0


def _read_config(args: argparse.Namespace) -> DistillRunConfig:
    """The YAML with ``--set`` applied and its plugins imported, validated; ConfigError names the problem."""
    from .config import (
        ConfigError,
        absolute_plugin_paths,
        apply_override,
        format_validation_error,
        import_plugins,
        parse_override,
        read_yaml,
    )

    raw = absolute_plugin_paths(read_yaml(args.config), args.config)
    for text in args.set or []:
        raw = apply_override(raw, *parse_override(text))
    import_plugins(raw)
    try:
        return DistillRunConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError("invalid distill config:\n" + format_validation_error(err)) from None


def _evaluate(cfg: DistillRunConfig, ds, real, protocol: str) -> dict:
    """Fresh nets trained on the set, tested on the real test split: the project's quick protocol, or the
    papers' (1000 epochs, per-sample augmentation, an MTT set's learned lr)."""
    from distill.evaluate import evaluate_distilled, papers_protocol, protocol_train_config

    q = cfg.quality
    train, augment = papers_protocol(ds) if protocol == "papers" else (protocol_train_config(), None)
    print(f"evaluating ({protocol} protocol, lr {(q.train or train).lr:g}): {q.nets} fresh nets trained on the "
          "set, tested on the real test split")
    quality = evaluate_distilled(ds, real, q.train or train, nets=q.nets, model_cfg=q.model, augment=augment)
    quality["protocol"] = protocol
    print(f"test accuracy {100 * quality['mean']:.2f} +- {100 * quality['std']:.2f} over {q.nets} nets")
    return quality


def _track(cfg: DistillRunConfig, data_cfg, ds, summary: dict, files: list[Path], out: Path) -> None:
    """One MLflow run: the settings, the set's cost (and quality), the set and its picture."""
    from .tracking import RunLogger, default_tracking_uri, finish_run, start_parent

    uri = cfg.tracking.get("tracking_uri") or default_tracking_uri(out)
    target = start_parent(uri, cfg.tracking.get("experiment_name") or cfg.name, out / "mlartifacts",
                          run_name=f"distill-{cfg.distill.method}", tags={"prunetune.stage": "distill"})
    run = RunLogger(uri, target.parent_run_id)
    run.params({"data": data_cfg.model_dump(mode="json"), "distill": cfg.distill.model_dump(mode="json")})
    run.metrics({"distill_wall_time_s": float(ds.cost.get("wall_time_s", 0)),
                 "distill_sample_passes": float(ds.cost.get("sample_passes", 0)), "samples": len(ds)})
    if "quality" in summary:
        run.metrics({"quality_mean": summary["quality"]["mean"], "quality_std": summary["quality"]["std"]})
    for p in files:
        if p.is_file():
            run.artifact(p)
    finish_run(uri, target.parent_run_id)
