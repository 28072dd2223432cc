"""A local S3 server for tests: ``moto`` in server mode on 127.0.0.1, one bucket, stopped by PID.

``s3_server()`` yields an ``S3Server`` whose ``uri(prefix)`` is a store URI pyarrow opens against it
(``?endpoint_override=...&scheme=http``). The dummy credentials and the disabled EC2 metadata lookup are
put in ``os.environ`` while it runs (pyarrow and boto3 look there; without them pyarrow first waits on
the metadata endpoint), and are inherited by whatever the test starts (Ray nodes, an MLflow server).
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator

from tests.processes import kill_groups

MOTO = str(Path(sys.executable).parent / "moto_server")
S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
          "AWS_EC2_METADATA_DISABLED": "true"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclasses.dataclass(frozen=True)
class S3Server:
    endpoint: str  # http://127.0.0.1:<port>
    bucket: str
    pid: int

    def uri(self, prefix: str) -> str:
        host = self.endpoint.removeprefix("http://")
        return f"s3://{self.bucket}/{prefix}?endpoint_override={host}&scheme=http&region=us-east-1"

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1")

    def keys(self, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return [o["Key"] for page in pages for o in page.get("Contents", [])]


@contextlib.contextmanager
def s3_server(bucket: str = "prunetune", log: Path | None = None, timeout_s: float = 60.0) -> Iterator[S3Server]:
    saved = {k: os.environ.get(k) for k in S3_ENV}
    os.environ.update(S3_ENV)
    port = free_port()
    out = open(log, "ab") if log else subprocess.DEVNULL
    proc = subprocess.Popen([MOTO, "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True, env=dict(os.environ))
    try:
        endpoint = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto_server did not come up on {endpoint} (exit {proc.poll()})") from None
                time.sleep(0.2)
        server = S3Server(endpoint, bucket, proc.pid)
        server.client().create_bucket(Bucket=bucket)
        yield server
    finally:
        kill_groups(proc.pid)
        proc.wait()
        if out is not subprocess.DEVNULL:
            out.close()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
