"""A real two-node Ray cluster on this machine, for tests.

``two_node_cluster()`` is a plain context manager; ``two_node_ray`` is a pytest fixture built
on it that yields the address ``"127.0.0.1:<port>"``.  Use it with
``from tests.cluster_fixture import two_node_ray``.

How it works:

* A unique short temp dir ``/tmp/rtf_XXXXXXXX`` holds everything: the Ray ``--temp-dir``, the
  ``ray start`` logs, and the auth token.
* Token auth: ``ray get-auth-token --generate`` is run with ``HOME=<temp dir>``, so the token is
  written to ``<temp dir>/.ray/auth_token`` (the user's own ``~/.ray/auth_token`` is neither read
  nor touched).  Every Ray process, and the driver, finds it through ``RAY_AUTH_MODE=token`` and
  ``RAY_AUTH_TOKEN_PATH=<temp dir>/.ray/auth_token``.  While the context is open both are set in
  this process's ``os.environ`` (and ``RAY_AUTH_TOKEN``, which would take precedence, is
  removed); the previous environment is restored on exit.
* Every ``ray start`` runs in its own session (``setsid``).  On exit, everything in those
  sessions, everything descending from them, and everything whose command line or environment
  mentions the temp dir is sent SIGTERM, then SIGKILL after a grace period (gcs_server, raylet
  and the agents ignore SIGTERM).  ``ray stop`` is never used: it stops every Ray process on the
  machine.  The exit fails loudly if a process mentioning the temp dir survives.
* All ports (GCS, Ray client server, dashboard agents, dashboard) are picked free, so this can
  run next to another Ray cluster on the same machine.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import pytest

# The ``ray`` CLI of the interpreter running the tests (the venv's).
RAY_CLI = str(Path(sys.executable).parent / "ray")

# Variables this module sets or removes in os.environ while a cluster is up.
_ENV_KEYS = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_TOKEN")

_WAIT_FOR_NODES = r"""
import sys, time
import ray
address, want, deadline = sys.argv[1], int(sys.argv[2]), time.time() + float(sys.argv[3])
ray.init(address=address, logging_level="ERROR", log_to_driver=False)
while True:
    alive = [n for n in ray.nodes() if n["Alive"]]
    if len(alive) >= want:
        print(f"alive={len(alive)}")
        sys.exit(0)
    if time.time() > deadline:
        print(f"only {len(alive)} of {want} nodes alive", file=sys.stderr)
        sys.exit(3)
    time.sleep(0.5)
"""


@dataclasses.dataclass(frozen=True)
class RayTestCluster:
    address: str  # "127.0.0.1:<gcs port>", for ray.init(address=...)
    temp_dir: str  # unique dir that holds Ray's temp dir, logs and the token
    token_path: str  # the auth token file (also in os.environ["RAY_AUTH_TOKEN_PATH"])
    env: dict  # the environment a child driver / CLI needs (os.environ plus auth vars)
    dashboard_url: str | None = None  # "http://127.0.0.1:<port>" when include_dashboard=True


# address -> cluster, for clusters that are currently up (lets a test find the temp dir).
ACTIVE: dict[str, RayTestCluster] = {}


def cluster_info(address: str) -> RayTestCluster:
    """The RayTestCluster behind an address yielded by ``two_node_ray``."""
    return ACTIVE[address]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------- /proc helpers


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, session id) of a process, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(")") + 2 :].split()
    return fields[0], int(fields[1]), int(fields[3])


def _read(pid: int, name: str) -> str:
    try:
        with open(f"/proc/{pid}/{name}", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    st = _stat(pid)
    return st is not None and st[0] not in ("Z", "X")


def _all_pids() -> list[int]:
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


def _protected() -> set[int]:
    """This process and its ancestors: never signalled."""
    pids, pid = set(), os.getpid()
    while pid > 1 and pid not in pids:
        pids.add(pid)
        st = _stat(pid)
        pid = st[1] if st else 0
    return pids


def processes_mentioning(text: str) -> list[tuple[int, str]]:
    """Live processes whose command line contains ``text``: (pid, command line)."""
    me = os.getpid()
    out = []
    for pid in _all_pids():
        if pid == me or not _alive(pid):
            continue
        cmd = _read(pid, "cmdline")
        if text in cmd:
            out.append((pid, cmd))
    return out


def _owned_processes(temp_dir: str, sessions: set[int]) -> set[int]:
    """Live processes started by this cluster: in one of its sessions, mentioning its temp
    dir in the command line or environment, or descending from any of those."""
    protected = _protected()
    info = {}
    for pid in _all_pids():
        st = _stat(pid)
        if st is not None and st[0] not in ("Z", "X"):
            info[pid] = st
    owned = set()
    for pid, (_, _, sid) in info.items():
        if pid in protected:
            continue
        if sid in sessions or temp_dir in _read(pid, "cmdline") or temp_dir in _read(pid, "environ"):
            owned.add(pid)
    # Descendants (a child may have called setsid or been re-titled).
    changed = True
    while changed:
        changed = False
        for pid, (_, ppid, _) in info.items():
            if ppid in owned and pid not in owned and pid not in protected:
                owned.add(pid)
                changed = True
    return owned


def _signal_all(pids: set[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _wait_gone(pids: set[int], timeout: float) -> set[int]:
    deadline = time.monotonic() + timeout
    alive = {p for p in pids if _alive(p)}
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = {p for p in alive if _alive(p)}
    return alive


def stop_cluster_processes(temp_dir: str, sessions: set[int], grace: float = 3.0) -> None:
    """SIGTERM everything the cluster started, SIGKILL what is left after ``grace`` seconds.
    Rescans a few times: a raylet can spawn a worker while it is being stopped."""
    for _ in range(5):
        pids = _owned_processes(temp_dir, sessions)
        if not pids:
            break
        _signal_all(pids, signal.SIGTERM)
        left = _wait_gone(pids, grace)
        if left:
            _signal_all(left, signal.SIGKILL)
            _wait_gone(left, 10.0)
    survivors = _owned_processes(temp_dir, sessions)
    mentions = processes_mentioning(temp_dir)
    if survivors or mentions:
        detail = "\n".join(f"  {p}: {_read(p, 'cmdline')[:200]}" for p in sorted(survivors))
        detail += "".join(f"\n  {p}: {c[:200]}" for p, c in mentions)
        raise RuntimeError(f"Ray test cluster processes survived SIGKILL:\n{detail}")


# ----------------------------------------------------------------------------- the cluster


def _tail(path: Path, n: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return "<no log>"


def _ray_start(args: list[str], env: dict, log: Path, sessions: set[int], timeout: float,
               wrap: list[str] = ()) -> None:
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [*wrap, RAY_CLI, "start", *args],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # everything it spawns lands in this session
        )
        sessions.add(proc.pid)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise RuntimeError(f"`ray start {' '.join(args)}` did not finish in {timeout:.0f} s:\n{_tail(log)}")
    if rc != 0:
        raise RuntimeError(f"`ray start {' '.join(args)}` failed with exit code {rc}:\n{_tail(log)}")


def _forget_cached_token() -> None:
    """Drop Ray's per-process cache of the auth token and mode, so the next cluster's token is read.
    Without it, a second test cluster in one pytest process is refused (InvalidAuthToken)."""
    from ray._private.authentication_test_utils import reset_auth_token_state

    reset_auth_token_state()


@contextlib.contextmanager
def two_node_cluster(
    timeout: float = 60.0, grace: float = 3.0, include_dashboard: bool = False,
    node2_wrap: list[str] = (), node2_env: dict | None = None, node2_args: list[str] = (),
) -> Iterator[RayTestCluster]:
    """Start a head node and a second node (resource ``node2``), 1 CPU each, with token auth.

    ``node2_wrap`` prefixes the second node's ``ray start`` (e.g. ``unshare -m ...``: every process of
    that node inherits what the wrapper set up), ``node2_env`` adds to its environment and ``node2_args``
    to its options (``--node-ip-address=127.0.0.2``: a driver started here then joins the head's raylet,
    not whichever of the two it finds first, as a driver on a real cluster joins its own machine's).

    Yields once a driver started in a child process with ``ray.init(address=...)`` sees 2 alive
    nodes (bounded by ``timeout`` seconds for each step).  Stops all of it on exit."""
    temp_dir = tempfile.mkdtemp(prefix="rtf_", dir="/tmp")
    sessions: set[int] = set()
    saved_env = {k: os.environ.get(k) for k in _ENV_KEYS}
    address = None
    try:
        token_dir = Path(temp_dir) / ".ray"
        token_path = str(token_dir / "auth_token")
        base_env = {k: v for k, v in os.environ.items() if k not in _ENV_KEYS and k != "RAY_ADDRESS"}
        base_env["RAY_USAGE_STATS_ENABLED"] = "0"

        # `ray get-auth-token --generate` writes to $HOME/.ray/auth_token: point HOME here.
        gen = subprocess.run(
            [RAY_CLI, "get-auth-token", "--generate"],
            env={**base_env, "HOME": temp_dir},
            capture_output=True,
            text=True,
            timeout=timeout,
            start_new_session=True,
        )
        if gen.returncode != 0 or not os.path.isfile(token_path):
            raise RuntimeError(f"`ray get-auth-token --generate` failed:\n{gen.stdout}\n{gen.stderr}")
        os.chmod(token_path, 0o600)

        env = {**base_env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": token_path}
        port = free_port()
        address = f"127.0.0.1:{port}"
        head_args = [
            "--head",
            f"--port={port}",
            "--num-cpus=1",
            "--num-gpus=0",
            f"--temp-dir={temp_dir}/r",
            f"--ray-client-server-port={free_port()}",
            f"--dashboard-agent-listen-port={free_port()}",
            "--disable-usage-stats",
        ]
        dashboard_url = None
        if include_dashboard:
            dash_port = free_port()
            dashboard_url = f"http://127.0.0.1:{dash_port}"
            head_args += ["--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash_port}"]
        else:
            head_args += ["--include-dashboard=false"]
        _ray_start(head_args, env, Path(temp_dir) / "head.log", sessions, timeout)
        _ray_start(
            [
                f"--address={address}",
                "--num-cpus=1",
                "--num-gpus=0",
                '--resources={"node2": 1}',
                f"--dashboard-agent-listen-port={free_port()}",
                "--disable-usage-stats",
                *node2_args,
            ],
            {**env, **(node2_env or {})},
            Path(temp_dir) / "node2.log",
            sessions,
            timeout,
            wrap=list(node2_wrap),
        )

        # Wait until a fresh driver process sees both nodes.
        try:
            wait = subprocess.run(
                [sys.executable, "-c", _WAIT_FOR_NODES, address, "2", str(timeout)],
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout + 30,
                start_new_session=True,
            )
        except subprocess.TimeoutExpired as e:
            raise RuntimeError(f"no driver could connect to {address} within {timeout + 30:.0f} s") from e
        if wait.returncode != 0:
            raise RuntimeError(
                f"Ray test cluster at {address} did not show 2 alive nodes within {timeout:.0f} s "
                f"(exit {wait.returncode}):\n{wait.stdout[-2000:]}\n{wait.stderr[-3000:]}\n"
                f"head log:\n{_tail(Path(temp_dir) / 'head.log')}"
            )

        # The driver in this process (or any child) needs exactly these two variables.
        os.environ.pop("RAY_AUTH_TOKEN", None)
        os.environ["RAY_AUTH_MODE"] = "token"
        os.environ["RAY_AUTH_TOKEN_PATH"] = token_path
        _forget_cached_token()  # Ray keeps the first token it read for the process: an earlier cluster's
        cluster = RayTestCluster(address, temp_dir, token_path, env, dashboard_url)
        ACTIVE[address] = cluster
        yield cluster
    finally:
        if address is not None:
            ACTIVE.pop(address, None)
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        _forget_cached_token()
        try:
            stop_cluster_processes(temp_dir, sessions, grace)
        finally:
            shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture
def two_node_ray() -> Iterator[str]:
    """Address "127.0.0.1:<port>" of a fresh two-node Ray cluster (token auth exported to
    os.environ); the second node has the custom resource ``node2``. Everything is stopped after
    the test; ``cluster_info(address)`` gives the temp dir and token path."""
    with two_node_cluster() as cluster:
        yield cluster.address
