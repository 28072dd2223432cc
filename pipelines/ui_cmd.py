"""``prunetune ui DIR``: the MLflow UI on one sweep's store, on 127.0.0.1, stopped with everything it
started on Ctrl-C.

``mlflow ui`` spawns a dozen helper processes (uvicorn workers, a job runner, huey consumers); it runs
here in a session of its own so that stopping it stops all of them, whatever they do with signals.
The URL printed opens the sweep's runs table (seen in headless Chromium: the bare experiment URL
opens MLflow 3.17's GenAI overview even for an experiment marked as model training), not MLflow's
landing page.
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

START_TIMEOUT_S = 90.0
STOP_GRACE_S = 10.0


def add_parser(sub) -> None:
    ui = sub.add_parser("ui", help="open a sweep's runs in the MLflow UI (127.0.0.1; Ctrl-C stops it)")
    ui.add_argument("dir", help="the sweep's output directory")
    ui.add_argument("--port", type=int, help="port to serve on (default: a free one)")
    ui.add_argument("--host", default="127.0.0.1",
                    help="interface to bind (default 127.0.0.1; anything else exposes the runs to the network)")
    ui.set_defaults(func=cmd_ui)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def mlflow_executable() -> str:
    """The mlflow installed beside this Python (it may not be on PATH)."""
    import shutil

    beside = Path(sys.executable).parent / "mlflow"
    return str(beside) if beside.is_file() else (shutil.which("mlflow") or "mlflow")


def experiment_url(base: str, experiment_id: str, view_key: str | None = None) -> str:
    """The experiment's runs table (MLflow 3.17 opens a bare experiment URL on its GenAI overview), in
    the sweep's shared view (its trials with their columns) when the sweep saved one."""
    url = f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs"
    return f"{url}?viewStateShareKey={view_key}" if view_key else url


def saved_view(tracking_uri: str, experiment_id: str, parent_run_id: str) -> str | None:
    """The key of the sweep's shared view if its store holds it (sweeps from before it existed do not).
    Read with sqlite3, not MLflow: importing MLflow would add seconds to the UI's start."""
    import sqlite3

    from .tracking import trials_view_key

    key = trials_view_key(parent_run_id)
    if not tracking_uri.startswith("sqlite:///"):
        return key  # a server: the sweep saved it there when it started
    try:
        with sqlite3.connect(f"file:{tracking_uri.removeprefix('sqlite:///')}?mode=ro", uri=True) as db:
            found = db.execute("SELECT 1 FROM experiment_tags WHERE experiment_id = ? AND key = ?",
                               (experiment_id, f"mlflow.sharedViewState.{key}")).fetchone()
    except sqlite3.Error:
        return None
    return key if found else None


def _waiting(t0: float, every_s: float = 5.0):
    """Say every few seconds that the server is still starting (a loaded machine can take a minute)."""
    said = [t0]

    def tick() -> None:
        if time.monotonic() - said[0] >= every_s:
            said[0] = time.monotonic()
            print(f"  still starting ({said[0] - t0:.0f} s)", flush=True)

    return tick


def _wait_until_up(url: str, proc: subprocess.Popen, timeout_s: float, on_wait=lambda: None) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        on_wait()
        if proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                if resp.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.3)
    return False


def stop_session(proc: subprocess.Popen, grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM to the server's whole process group, then SIGKILL to what is left after ``grace_s``."""
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            continue
        if not _group_alive(proc.pid):
            return


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def cmd_ui(args: argparse.Namespace) -> int:
    from .cli_errors import EXIT_FAILED
    from .cli_errors import fail as _fail
    from .sweep_state import SweepState

    out_dir = Path(args.dir).resolve()
    try:
        state = SweepState.load(out_dir) if out_dir.is_dir() else None
    except ValueError as exc:
        return _fail(str(exc))
    if state is None:
        return _fail(f"{out_dir} holds no sweep (no sweep.json); give the --out directory of a prunetune run")
    try:
        state.require_files(out_dir)
    except ValueError as exc:
        return _fail(str(exc))
    moved_from = state.moved_from(out_dir)
    if moved_from is not None:  # a copy: serve its own artifacts, not the original's
        from .tracking import rebase_artifacts

        rebase_artifacts(state.tracking_uri, moved_from, out_dir)
        state.save(out_dir)
    view = saved_view(state.tracking_uri, state.experiment_id, state.parent_run_id)
    if state.tracking_uri.startswith(("http://", "https://")):  # the runs live on a tracking server already
        print(f"this sweep logs to the tracking server {state.tracking_uri}:\n  "
              f"{experiment_url(state.tracking_uri, state.experiment_id, view)}")
        return 0
    port = args.port or free_port(args.host)
    base = f"http://{args.host}:{port}"
    cmd = [mlflow_executable(), "ui", "--backend-store-uri", state.tracking_uri,
           "--default-artifact-root", (out_dir / "mlartifacts").as_uri(), "--host", args.host, "--port", str(port),
           "--workers", "1"]
    log_path = out_dir / "logs" / "mlflow-ui.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    # The job runner and its consumers serve GenAI judges and scheduled tasks, not the runs table: off,
    # the server starts in about half the time with 2 processes instead of 10.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with log_path.open("ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env=env)
    previous = signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        print(f"starting the MLflow UI on {base} for {state.tracking_uri} (log: {log_path}) ...", flush=True)
        t0 = time.monotonic()
        if not _wait_until_up(base, proc, START_TIMEOUT_S, on_wait=_waiting(t0)):
            tail = log_path.read_text(errors="replace")[-2000:]
            return _fail(f"the MLflow UI did not come up on {base} within {START_TIMEOUT_S:g} s; its log "
                         f"{log_path} ends with:\n{tail}", code=EXIT_FAILED)
        print(f"up in {time.monotonic() - t0:.1f} s", flush=True)
        print(f"sweep {state.name!r}: {experiment_url(base, state.experiment_id, view)}\n(Ctrl-C stops the UI)",
              flush=True)
        proc.wait()
        return _fail(f"the MLflow UI stopped by itself (exit {proc.returncode}); see {log_path}", code=EXIT_FAILED)
    except KeyboardInterrupt:
        print("\nstopping the MLflow UI", file=sys.stderr)
        return 0
    finally:
        stop_session(proc)
        signal.signal(signal.SIGTERM, previous)
