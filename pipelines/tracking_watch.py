"""A tracking server that dies must not hang a sweep.

MLflow's HTTP client retries each request 7 times with exponential backoff and a 120 s timeout: a
dead server held a measured sweep silent for 8 minutes, and Ctrl-C then waited on the retries. Here:

- every MLflow HTTP call of the driver and the trials is bounded (``BOUNDED_HTTP``: 10 s per try, 2
  retries, about 35 s in all), set before MLflow is imported and shipped to the workers;
- the driver watches the server (``TrackingWatch``: a TCP connect and ``/health`` every few seconds);
  when it stays unreachable for ``LOST_AFTER_S``, the watch interrupts the sweep the way Ctrl-C
  does, so it ends marked interrupted (resumable) with one line naming the URI;
- a trial whose MLflow call fails for want of the server records no row (``is_unreachable``): its
  slot stays unfinished and the resume runs it again under its own run.
"""
from __future__ import annotations

import os
import signal
import threading
import time
import urllib.error
import urllib.request
from urllib.parse import urlsplit

BOUNDED_HTTP = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "10", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
                "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0"}
PROBE_EVERY_S = 3.0
PROBE_TIMEOUT_S = 3.0
LOST_AFTER_S = 15.0


def bound_http_calls() -> dict[str, str]:
    """Bound MLflow's HTTP retries in this process (a user's own setting wins); returns what workers need."""
    for key, value in BOUNDED_HTTP.items():
        os.environ.setdefault(key, value)
    return {key: os.environ[key] for key in BOUNDED_HTTP}


def remote(uri: str | None) -> bool:
    return bool(uri) and uri.startswith(("http://", "https://"))


def reachable(uri: str, timeout_s: float = PROBE_TIMEOUT_S) -> bool:
    """The server answers its health check (a local sqlite store always does)."""
    if not remote(uri):
        return True
    parts = urlsplit(uri)
    try:
        with urllib.request.urlopen(f"{parts.scheme}://{parts.netloc}/health", timeout=timeout_s) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def is_unreachable(exc: BaseException) -> bool:
    """Whether an exception (or one it was raised from) says the tracking server could not be reached."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        name = type(exc).__name__
        text = str(exc)
        if name in ("ConnectionError", "ConnectTimeout", "ReadTimeout", "MaxRetryError", "NewConnectionError",
                    "ConnectionRefusedError", "RemoteDisconnected", "ProtocolError"):
            return True
        if name == "MlflowException" and ("Max retries exceeded" in text or "Failed to establish" in text
                                          or "Connection refused" in text or "Read timed out" in text):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def describe_unreachable(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200]


class TrackingWatch:
    """Probes a remote tracking server from the driver; interrupts the sweep when it stays down."""

    def __init__(self, uri: str | None, lost_after_s: float = LOST_AFTER_S, every_s: float = PROBE_EVERY_S) -> None:
        self.uri, self.lost_after_s, self.every_s = uri, lost_after_s, every_s
        self.lost = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "TrackingWatch":
        if remote(self.uri):
            self._thread = threading.Thread(target=self._watch, name="tracking-watch", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(PROBE_TIMEOUT_S + 1)

    def _watch(self) -> None:
        down_since: float | None = None
        while not self._stop.wait(self.every_s):
            if reachable(self.uri):
                down_since = None
                continue
            down_since = down_since or time.monotonic()
            if time.monotonic() - down_since >= self.lost_after_s:
                self.lost = True
                os.kill(os.getpid(), signal.SIGINT)  # Tune stops the phase as on Ctrl-C
                return

    def usable(self) -> bool:
        """Whether the driver should still try to reach the server (ending runs, a last record)."""
        return not self.lost and reachable(self.uri)
