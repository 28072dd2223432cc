"""``prunetune``: the command line. Subcommands stay thin; the work lives in the packages."""
from __future__ import annotations

import argparse
import atexit
import os
import sys
import threading
from pathlib import Path

from .cli_errors import EXIT_FAILED, EXIT_STOPPED
from .cli_errors import fail as _fail


def _warn(msg: str) -> None:
    """What a command skipped and goes on without (stderr, so that a pipe reads only the listing)."""
    print(f"prunetune: warning: {msg}", file=sys.stderr)


def cmd_run(args: argparse.Namespace) -> int:
    from .config import ConfigError, load_experiment

    try:
        cfg, raw = load_experiment(args.config, args.set or [], args.variant)
    except ConfigError as exc:
        return _fail(str(exc))
    out_dir = Path(args.out or Path("runs") / cfg.name).resolve()
    from .preflight import preflight
    from .sweep_state import SweepState, config_hash

    try:
        state = SweepState.load(out_dir)
        preflight(cfg, raw, out_dir)
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        return _fail(str(exc))
    if args.check:
        from .check_cmd import check

        print(f"config ok: {cfg.name!r}, output {out_dir}" + (f" (holds a {state.status} sweep)" if state else ""))
        print(check(cfg, raw, out_dir))
        print("nothing was run or written (--check)")
        return 0
    if state is not None and state.live_driver():
        return _fail(f"{out_dir} is being run right now by {state.live_driver()}; wait for it, or stop it first")
    if state is not None and state.status != "finished":
        return _fail(f"{out_dir} holds an unfinished sweep {state.name!r} ({state.status}, attempt {state.attempts}); "
                     f"finish it with:  prunetune resume {out_dir}   (or choose another --out)")
    if state is not None and state.config_hash != config_hash(raw):
        return _fail(f"{out_dir} holds the finished sweep {state.name!r} of another config; choose another --out "
                     "(stage outputs can be shared between sweeps with store.uri)")
    return _sweep(cfg, raw, out_dir, resume=False, verbosity=_verbosity(args))


def cmd_resume(args: argparse.Namespace) -> int:
    from .config import ConfigError, validate
    from .sweep_state import SweepState

    out_dir = Path(args.dir).resolve()
    try:
        state = SweepState.load(out_dir)
        if state is None:
            raise ConfigError(f"{out_dir} holds no sweep (no sweep.json); start one with: prunetune run CONFIG --out {out_dir}")
        state.require_files(out_dir)
        from .config import read_yaml

        raw = read_yaml(out_dir / "config.yaml")
        cfg = validate(raw, context=f" in {out_dir / 'config.yaml'}")
        if state.live_driver():
            raise ConfigError(f"{out_dir} is being run right now by {state.live_driver()}; wait for it, or stop it first")
        if not (args.set or args.retry_failed or args.retry):
            from .runner import finished_outcome

            done = finished_outcome(cfg, out_dir)
            if done is not None:
                print(f"{out_dir}: the sweep {state.name!r} finished; nothing is left to run")
                return _print_outcome(done, out_dir)
        from .preflight import preflight

        preflight(cfg, raw, out_dir)  # the data may have moved since the sweep started
        if args.set and not (args.retry_failed or args.retry):
            raise ConfigError("--set on resume corrects the slots it re-runs: give --retry-failed or --retry SLOT")
        if args.retry_failed or args.retry:
            from .retry import mark_for_retry, retry_slots

            slots = retry_slots(out_dir, args.retry_failed, args.retry or [])
            if not slots:
                print("no failed grid trials to retry")
            else:
                fixed = mark_for_retry(out_dir, state, cfg, raw, slots, args.set or [])
                print(f"retrying {', '.join(slots)}" + (f" with {fixed}" if fixed else ""))
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        return _fail(str(exc))
    return _sweep(cfg, raw, out_dir, resume=True, verbosity=_verbosity(args))


def _verbosity(args: argparse.Namespace) -> str:
    return "quiet" if args.quiet else "verbose" if args.verbose else "normal"


def _sweep(cfg, raw: dict, out_dir: Path, resume: bool, verbosity: str = "normal") -> int:
    import yaml

    from .config import ConfigError
    from .live import SweepView
    from .outages import SweepInterrupted, SweepOutage, TrackingLost, outage
    from .runner import run_sweep

    config_text = yaml.safe_dump(raw, sort_keys=False)
    try:
        outcome = run_sweep(cfg, raw, out_dir, config_text, view=SweepView(verbosity), resume=resume)
    except ConfigError as exc:
        return _fail(str(exc))
    except SweepOutage as exc:
        return _fail(f"{exc}; the sweep stopped (finished trials and stages are kept). Once that is fixed (free "
                     f"space on the disk of {out_dir} and its store):  prunetune resume {out_dir}", code=EXIT_FAILED)
    except TrackingLost as exc:
        return _fail(f"the tracking server {exc} stopped answering; the sweep stopped (finished trials and stages "
                     f"are kept). Once it is back:  prunetune resume {out_dir}", code=EXIT_FAILED)
    except SweepInterrupted:
        print(f"\nsweep stopped; finished trials and stages are kept. Resume with:  prunetune resume {out_dir}",
              file=sys.stderr)
        return EXIT_STOPPED
    except Exception as exc:  # an outage met by the driver itself: one line, the traceback to a log
        reason = outage(exc)
        if reason is None:
            raise
        where = _keep_traceback(exc, out_dir)
        return _fail(f"{reason}; the sweep stopped (finished trials and stages are kept){where}. Once that is "
                     f"fixed:  prunetune resume {out_dir}", code=EXIT_FAILED)
    return _print_outcome(outcome, out_dir)


def _print_outcome(outcome, out_dir: Path) -> int:
    from .results import error_lines
    from .summary import render_summary, summarize

    print()
    print("mean ± std over seeds per point (every trial: results.parquet and the report):")
    print("\n".join([render_summary(summarize(outcome.rows)), *error_lines(outcome.rows)]))
    print()
    print(f"results: {outcome.results_path}")
    if outcome.summary_path is not None:
        print(f"summary: {outcome.summary_path}")
    if outcome.report_path is not None:
        print(f"report: {outcome.report_path}")
    print(f"MLflow UI: prunetune ui {out_dir}")
    if not outcome.ok:
        print(f"{sum(r['status'] == 'error' for r in outcome.rows)} trial(s) failed", file=sys.stderr)
        return 1
    return 0


def _keep_traceback(exc: BaseException, out_dir: Path) -> str:
    """The traceback in DIR/logs/driver-error.log, or the temp dir when DIR's disk is the full one."""
    import tempfile
    import traceback

    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    for path in (out_dir / "logs" / "driver-error.log",
                 Path(tempfile.gettempdir()) / f"prunetune-driver-error-{out_dir.name}.log"):
        try:
            path.write_text(text)
            return f"; traceback in {path}"
        except OSError:
            continue
    return ""


def cmd_report(args: argparse.Namespace) -> int:
    from .report import build_report
    from .results import read_rows
    from .summary import SUMMARY_FILE, summarize, write_summary

    out_dir = Path(args.dir).resolve()
    if not (out_dir / "results.parquet").is_file():
        return _fail(f"{out_dir} has no results.parquet: give the --out directory of a sweep that has run")
    try:
        rows = read_rows(out_dir / "results.parquet")
    except ValueError as exc:
        return _fail(str(exc))
    summary = write_summary(summarize(rows), out_dir / SUMMARY_FILE)
    html_path, md_path, figures = build_report(out_dir, rows)
    print(f"report: {html_path}\nmarkdown: {md_path}\nsummary: {summary}\n"
          f"figures: {', '.join(f.path.name for f in figures)}")
    return 0


def cmd_store(args: argparse.Namespace) -> int:
    from training.store import ArtifactStore

    from .sweep_state import SweepState

    target = Path(args.dir)
    try:
        state = SweepState.load(target) if target.is_dir() else None
    except ValueError as exc:
        return _fail(str(exc))
    uri = state.store_uri if state is not None else args.dir
    if "://" not in uri and not (Path(uri) / "stages").is_dir() and not (Path(uri) / "index").is_dir():
        return _fail(f"{args.dir} is neither a sweep's output directory (no sweep.json) nor a stage store "
                     "(no stages/ or index/)")
    from .trial import stage_names

    if args.stage is not None and args.stage not in stage_names():
        return _fail(f"--stage {args.stage!r}: no such stage; allowed: {', '.join(stage_names())}")
    rows = [r for r in ArtifactStore(uri, log=_warn).index() if args.stage in (None, r["stage"])]
    if not rows:
        print(f"no stage runs in {uri}" + (f" for stage {args.stage}" if args.stage else ""))
        return 0
    print(f"{'stage':<10} {'key':<16} {'status':<6} {'wall_s':>8} {'passes':>10}  {'first needed by':<24} host/pid")
    for r in sorted(rows, key=lambda r: r.get("start") or 0):
        wall = f"{r['wall_time_s']:.1f}" if r.get("wall_time_s") is not None else "-"
        passes = str(r["sample_passes"]) if r.get("sample_passes") is not None else "-"
        who = r.get("requested_by") or "-"
        print(f"{r['stage']:<10} {r['key']:<16} {r['status']:<6} {wall:>8} {passes:>10}  {who:<24} "
              f"{r.get('host')}/{r.get('pid')}")
    by_status: dict[str, int] = {}
    for r in rows:
        by_status[r["status"]] = by_status.get(r["status"], 0) + 1
    print(f"{len(rows)} stage runs: " + ", ".join(f"{n} {s}" for s, n in sorted(by_status.items())))
    return 0


def _add_verbosity(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quiet", action="store_true", help="print only the final table and the paths")
    group.add_argument("--verbose", action="store_true",
                       help="also print every trial's and Ray worker's log lines (always in DIR/logs/)")


def build_parser() -> argparse.ArgumentParser:
    from .distill_cmd import add_parser as add_distill_parser
    from .list_cmd import add_parser as add_list_parser
    from .prune_cmd import add_parser as add_prune_parser
    from .ui_cmd import add_parser as add_ui_parser

    parser = argparse.ArgumentParser(prog="prunetune", description="Pruning ablation sweeps on Ray Tune + Optuna + MLflow")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a sweep from a YAML experiment file")
    run.add_argument("config", help="experiment YAML (see configs/)")
    run.add_argument("--out", help="output directory (default runs/<name>)")
    run.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config value, e.g. prune.sparsity=0.9 (repeatable)")
    run.add_argument("--variant", metavar="NAME", help="apply one of the config's named variants (e.g. cpu-smoke) first")
    run.add_argument("--check", action="store_true",
                     help="validate and print the plan (trials per phase, stages needed, which are in the store, "
                          "sample passes to compute); runs and writes nothing")
    _add_verbosity(run)
    run.set_defaults(func=cmd_run)
    resume = sub.add_parser("resume", help="finish a sweep that was stopped or crashed (reuses everything done)")
    resume.add_argument("dir", help="the sweep's output directory")
    resume.add_argument("--retry-failed", action="store_true",
                        help="also re-run the grid trials that failed (under their own MLflow runs)")
    resume.add_argument("--retry", nargs="+", metavar="SLOT", help="re-run these grid slots (e.g. grid-3)")
    resume.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="a corrected setting for the re-run slots only (recorded in sweep.json)")
    _add_verbosity(resume)
    resume.set_defaults(func=cmd_resume)
    report = sub.add_parser("report", help="(re)draw a sweep's report: DIR/report.html, report.md, figures/")
    report.add_argument("dir", help="the sweep's output directory")
    report.set_defaults(func=cmd_report)
    store = sub.add_parser("store", help="list the stage runs in a sweep's store")
    store.add_argument("dir", help="a sweep's output directory, or a store path/URI")
    store.add_argument("--stage", help="only this stage (e.g. pretrain, imp_level)")
    store.set_defaults(func=cmd_store)
    add_ui_parser(sub)
    add_prune_parser(sub)
    add_distill_parser(sub)
    add_list_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:  # outside a sweep's phases (start-up, shut-down): nothing half-written
        print("\nprunetune: interrupted", file=sys.stderr)
        return EXIT_STOPPED
    except BrokenPipeError:  # `prunetune store DIR | head`: the reader left; not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0


def console_main() -> None:
    """The ``prunetune`` command: ``main``, then an exit that skips the interpreter's teardown.

    After a sweep the process holds torch, Ray, MLflow and SQLAlchemy; tearing their modules down
    took over 2 s on 2 cores, after everything was written and Ray was stopped. What the teardown
    would do that matters is done first, in the interpreter's order: non-daemon threads joined,
    ``atexit`` handlers run (logging's flush among them), the standard streams flushed. An exception
    leaves the ordinary way, traceback and all."""
    code = main()
    shutdown = getattr(threading, "_shutdown", None)  # private: without it, the ordinary exit
    if shutdown is None:
        sys.exit(code)
    shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a reader that left, a closed stream: nothing more to say
            pass
    os._exit(code)


if __name__ == "__main__":
    console_main()
