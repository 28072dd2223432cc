"""``prunetune``: the command line. Subcommands stay thin; the work lives in the packages."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXIT_CONFIG = 2


def _fail(msg: str, code: int = EXIT_CONFIG) -> int:
    print(f"prunetune: error: {msg}", file=sys.stderr)
    return code


def cmd_run(args: argparse.Namespace) -> int:
    from .config import ConfigError, load_experiment

    try:
        cfg, raw = load_experiment(args.config, args.set or [])
    except ConfigError as exc:
        return _fail(str(exc))
    out_dir = Path(args.out or Path("runs") / cfg.name).resolve()
    try:
        _preflight(cfg, raw, out_dir)
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        return _fail(str(exc))

    import yaml

    from .results import render
    from .runner import run_sweep
    from .tracking import ui_command

    config_text = yaml.safe_dump(raw, sort_keys=False)
    outcome = run_sweep(cfg, raw, out_dir, config_text)
    print()
    print(render(outcome.rows))
    print()
    print(f"results: {outcome.results_path}")
    print(f"MLflow UI: {ui_command(outcome.tracking_uri, out_dir)}")
    if not outcome.ok:
        print(f"{sum(r['status'] != 'ok' for r in outcome.rows)} trial(s) failed", file=sys.stderr)
        return 1
    return 0


def _preflight(cfg, raw, out_dir: Path) -> None:
    """Fail before Ray starts if a dataset is missing; resolve data.root to an absolute path."""
    from search.space import expand_grid
    from training.data import load_dataset

    from .config import ConfigError, trial_config

    root = Path(cfg.data.root)
    raw.setdefault("data", {})
    raw["data"] = {**raw["data"], "root": str(root.resolve())}
    points = expand_grid(cfg.sweep.grid) or [{}]
    if cfg.sweep.optuna is not None:
        points += [dict(cfg.sweep.optuna.fixed)]
    seen = set()
    for point in points:
        data_cfg = trial_config(raw, point).data
        key = data_cfg.model_dump_json()
        if key not in seen:
            seen.add(key)
            load_dataset(data_cfg)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir} exists and is not a directory")


def build_parser() -> argparse.ArgumentParser:
    from .distill_cmd import add_parser as add_distill_parser
    from .prune_cmd import add_parser as add_prune_parser

    parser = argparse.ArgumentParser(prog="prunetune", description="Pruning ablation sweeps on Ray Tune + Optuna + MLflow")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a sweep from a YAML experiment file")
    run.add_argument("config", help="experiment YAML (see configs/)")
    run.add_argument("--out", help="output directory (default runs/<name>)")
    run.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config value, e.g. prune.sparsity=0.9 (repeatable)")
    run.set_defaults(func=cmd_run)
    add_prune_parser(sub)
    add_distill_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
