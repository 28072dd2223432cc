"""An MLflow tracking server for tests and benchmarks: 127.0.0.1, runs in SQLite, artifacts proxied to
a bucket of the local S3 server (``tests.s3_server``), stopped by PID."""
from __future__ import annotations

import contextlib
import os
import subprocess
import time
import urllib.request
from pathlib import Path

from pipelines.ui_cmd import mlflow_executable
from tests.processes import kill_groups
from tests.s3_server import free_port


@contextlib.contextmanager
def mlflow_server(s3, root: Path):
    """``mlflow server`` on 127.0.0.1, runs in SQLite, artifacts proxied to the bucket; stopped by PID.
    Yields its URL and a function that waits until it answers (it starts while the Ray nodes do)."""
    port = free_port()
    env = {**os.environ, "MLFLOW_S3_ENDPOINT_URL": s3.endpoint, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    log = (root / "mlflow.log").open("ab")
    proc = subprocess.Popen(
        [mlflow_executable(), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{root}/mlflow.db", "--artifacts-destination", f"s3://{s3.bucket}/mlartifacts"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, env=env, cwd=root)

    def wait_up() -> None:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                    return
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, (root / "mlflow.log").read_text()[-2000:]
                time.sleep(0.3)

    try:
        yield f"http://127.0.0.1:{port}", wait_up
    finally:
        kill_groups(proc.pid)
        proc.wait(30)
        log.close()
