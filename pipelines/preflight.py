"""The sweep's pre-flight: what a trial or a stage would reject, found on the driver before Ray starts
or anything is written.

The schema (``pipelines.config``) catches what one config can get wrong on its own. What needs the
data or a model (a rewind step beyond training, a layer name the model lacks, more images per class
than a class has, a model that cannot take the data's inputs) is asked of each stage of every trial
the sweep can produce, through ``Stage.check``, so the rule lives beside the code that would fail.
Then what lies outside the config: the output directory, the store, the study database a resume
would open, and the tracking server.
"""
from __future__ import annotations

import contextlib
import os
import socket
import sqlite3
import tempfile
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import url2pathname

from .config import ConfigError, ExperimentConfig, sweep_points, trial_config
from .tracking_watch import remote

SERVER_TIMEOUT_S = 3.0


def preflight(cfg: ExperimentConfig, raw: dict, out_dir: Path) -> None:
    """Raise ``ConfigError`` naming the field (and the sweep point) for the first problem found.

    Resolves ``data.root`` in ``raw`` to an absolute path, since Tune runs trials in other directories."""
    from .sweep_state import (
        STUDY_FILE,  # imports torch; this module's checks must not (prunetune prune)
    )

    raw.setdefault("data", {})
    raw["data"] = {**raw["data"], "root": str(Path(cfg.data.root).resolve())}
    check_output_dir(out_dir)
    check_store_uri(cfg.store.uri)
    if cfg.sweep.optuna is not None:
        check_study_file(out_dir / STUDY_FILE)
    check_search_space(cfg)
    check_tracking_server(cfg.tracking.tracking_uri)
    check_trials(cfg, raw)


def check_output_dir(out_dir: Path) -> None:
    """The output directory can be created and written (a read-only mount, a file in the way)."""
    check_writable_dir(out_dir, f"--out {out_dir}", "choose a writable output directory with --out")


def check_store_uri(uri: str | None) -> None:
    """The store (a path, ``file://`` or an object store) can be created and written: otherwise Ray would
    start and every trial would end as an error row."""
    if uri is None:
        return
    if "://" in uri and not uri.startswith("file://"):
        check_object_store(uri)
        return
    path = Path(url2pathname(urlsplit(uri).path)) if "://" in uri else Path(uri).expanduser().resolve()
    check_writable_dir(path, f"store.uri {uri}", "point store.uri at a writable directory (or leave it unset: "
                       "<out>/store)")


def check_object_store(uri: str) -> None:
    """One small object written and deleted under the store's prefix: an unreachable endpoint, a missing
    bucket or refused credentials are named now, with the field, not as every trial's error."""
    import uuid

    import pyarrow.fs as pafs

    shown = f"store.uri {uri.partition('?')[0]}"
    try:
        fs, root = pafs.FileSystem.from_uri(uri)  # S3 may already ask the network (the bucket's region)
        probe = f"{root.rstrip('/')}/.prunetune-probe-{uuid.uuid4().hex}"
        with fs.open_output_stream(probe) as f:
            f.write(b"probe")
        fs.delete_file(probe)
    except Exception as exc:  # noqa: BLE001 (pyarrow raises OSError, ArrowInvalid, ... by cause)
        raise ConfigError(f"{shown}: {_object_store_problem(str(exc))} ({_one_line(exc)}); check the bucket, the "
                          "endpoint (?endpoint_override=host:port&scheme=http, or AWS_ENDPOINT_URL) and the "
                          "credentials") from None


def _object_store_problem(text: str) -> str:
    if any(s in text for s in ("NETWORK_CONNECTION", "Could not connect", "Could not resolve", "Couldn't resolve")):
        return "cannot reach the object store's endpoint"
    if "NO_SUCH_BUCKET" in text or "NoSuchBucket" in text:
        return "the bucket does not exist"
    if any(s in text for s in ("ACCESS_DENIED", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch")):
        return "access denied (credentials or bucket policy)"
    if "query parameter" in text or "URI" in text:
        return "not a URI pyarrow.fs can open"
    return "cannot write there"


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]


def check_writable_dir(path: Path, label: str, advice: str) -> None:
    """``path`` is a directory, or can become one, in which this process can create files: the nearest
    existing ancestor is probed with a file created and removed at once, so nothing is left behind.
    ``label`` is the option or field with its value as the user gave it."""
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{label} exists and is not a directory")
    probe_in = path
    while not probe_in.exists():
        probe_in = probe_in.parent
    if not probe_in.is_dir():
        raise ConfigError(f"{label}: {probe_in} is not a directory")
    try:
        fd, probe = tempfile.mkstemp(dir=probe_in, prefix=".prunetune-probe-")
    except OSError as exc:
        raise ConfigError(f"{label}: cannot write in {probe_in} ({exc.strerror}); {advice}") from None
    os.close(fd)
    os.unlink(probe)


def check_study_file(path: Path) -> None:
    """An existing study database is one SQLite can read (Optuna would end in a DatabaseError traceback).
    A lock held by a live driver is not damage: that case is left to the driver check. Nor is a hot
    journal, left by a driver killed in the middle of a write (SQLite refuses a read-only reader
    until it is rolled back): the check opens the file for writing then, which rolls it back to the
    last commit, as Optuna's first open would."""
    if not path.exists():
        return
    try:
        verdict = _quick_check(path, "ro")
    except sqlite3.Error as exc:
        name = getattr(exc, "sqlite_errorname", "")
        if name in ("SQLITE_BUSY", "SQLITE_LOCKED"):
            return
        verdict = (str(exc),)
        if name == "SQLITE_READONLY_ROLLBACK":
            try:
                verdict = _quick_check(path, "rw")
            except sqlite3.Error as again:
                verdict = (str(again),)
    if verdict != ("ok",):
        raise ConfigError(f"{path} is not a readable Optuna study ({verdict[0] if verdict else 'empty answer'}); "
                          "restore it from a backup, or start the sweep afresh in another --out")


def _quick_check(path: Path, mode: str) -> tuple:
    with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode={mode}", uri=True)) as db:
        return db.execute("PRAGMA quick_check").fetchone()


def check_search_space(cfg: ExperimentConfig) -> None:
    """Every search range is a distribution Optuna accepts (its own checks, not a copy of them)."""
    if cfg.sweep.optuna is None:
        return
    opt = cfg.sweep.optuna
    for field in ("layer_densities", "channel_keep"):
        if getattr(opt, field) is None:
            continue
        from pruning.scorers import SCORERS

        method = opt.fixed.get("prune.method", cfg.prune.method)
        at = opt.fixed.get("prune.options.at", cfg.prune.options.get("at")) if method == "magnitude" else None
        if method not in SCORERS or at == "trained":
            what = {"layer_densities": "densities", "channel_keep": "channel fractions"}[field]
            raise ConfigError(f"invalid config:\n  sweep.optuna.{field}: per-layer {what} apply to "
                              f"pruning-at-init methods ({', '.join(SCORERS.names())}); the search prunes with "
                              f"{method!r} (set it in sweep.optuna.fixed)")
        searched = [a for a in opt.space if a.startswith(("model", "prune.method", "prune.ignore", "data"))]
        if searched:
            raise ConfigError(f"invalid config:\n  sweep.optuna.{field}: the layers must be the same in every "
                              f"trial, but the search also varies {searched}")
    ranges = [(f"space.{axis}", d) for axis, d in opt.space.items()] + [
        (f"conditional.{axis}.{choice}.{path}", d)
        for axis, branches in opt.conditional.items() for choice, sub in branches.items() for path, d in sub.items()]
    for where, dist in ranges:
        try:
            dist.to_optuna()
        except ValueError as exc:
            raise ConfigError(f"invalid config:\n  sweep.optuna.{where}: {exc}") from None


def check_tracking_server(uri: str | None) -> None:
    """An http(s) tracking server answers within seconds (MLflow itself would retry for minutes)."""
    if not remote(uri):
        return
    parts = urlsplit(uri)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=SERVER_TIMEOUT_S):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(f"tracking.tracking_uri {uri}: no server answers at {parts.hostname}:{port} within "
                          f"{SERVER_TIMEOUT_S:g} s ({reason}); start it, or leave tracking_uri unset for a "
                          "local sqlite store in the output directory") from None


def check_trials(cfg: ExperimentConfig, raw: dict) -> None:
    """Load each distinct dataset once and ask each distinct stage of every bounding trial to check
    itself; the message names the sweep point the failing trial comes from."""
    from training.data import DatasetNotFoundError
    from training.stage import StageEnv

    from .trial import trial_graph

    env = StageEnv(store=None)  # checks read data and build models; they never touch the store
    checked: set[str] = set()
    for where, point in sweep_points(cfg):
        trial = trial_config(raw, point)
        try:
            env.data(trial.data)
        except DatasetNotFoundError as exc:
            raise ConfigError(f"data.root: {exc}") from None
        except ValueError as exc:
            raise ConfigError(f"data ({where}): {exc}") from None
        for stage in trial_graph(trial).stages():
            if stage.key in checked:
                continue
            try:
                stage.check(env)
            except (ValueError, KeyError) as exc:
                text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
                raise ConfigError(f"{where}: {text}") from None
            checked.add(stage.key)
