"""In-flight dedup for stores without an atomic create (S3, GCS, any pyarrow object store).

An object store cannot make "create this lease unless it exists" atomic, so the processes that share a
store on a Ray cluster ask one actor instead: a named, detached Ray actor per store (``coordinator_for``)
that grants one lease per stage key. Whoever is first creates it (the sweep's driver does so at start,
so it lives on the driver's node); every other process on any node finds it by name.

A holder proves it is alive by heartbeats; a waiter that sees no progress asks the holder's node
whether the holder's process still exists (a zero-CPU probe task pinned to that node). A dead process,
a dead node, or a heartbeat older than the lease timeout makes the lease free for the waiter. The
actor's state is only who holds what right now: losing it (a restarted cluster) loses no result,
because the store's manifest, not the lease, says what is done.
"""
from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import threading
import time
import uuid
from typing import Callable

from .processes import pid_alive, process_started

NAMESPACE = "prunetune"
WAIT_S = 2.0  # one acquire call waits this long for a release before the caller looks at the holder
PROBE_TIMEOUT_S = 10.0
REMOTE_PROBE_EVERY_S = 6.0


class LeaseCoordinator:
    """The actor: one lease per name, granted to one holder at a time (an asyncio actor, so waiters
    park on an event instead of polling)."""

    def __init__(self) -> None:
        self.leases: dict[str, dict] = {}
        self.freed: dict[str, asyncio.Event] = {}
        self.stats = {"granted": 0, "taken_over": 0, "waits": 0}

    def _free(self, name: str) -> None:
        self.leases.pop(name, None)
        event = self.freed.pop(name, None)
        if event is not None:
            event.set()

    async def acquire(self, name: str, holder: dict, timeout_s: float, wait_s: float = WAIT_S,
                      dead_token: str | None = None) -> dict:
        """``{"granted": True}``, or the current holder after waiting up to ``wait_s`` for a release.
        ``dead_token``: the caller found that holder dead; its lease is taken over if still the same."""
        deadline = time.monotonic() + wait_s
        current = self.leases.get(name)
        if current is not None and dead_token is not None and current["token"] == dead_token:
            self.stats["taken_over"] += 1
            self._free(name)
        while True:
            current = self.leases.get(name)
            now = time.monotonic()
            if current is not None and now - current["beat"] > timeout_s:
                self.stats["taken_over"] += 1
                self._free(name)
                current = None
            if current is None or current["token"] == holder["token"]:
                self.leases[name] = {**holder, "beat": now, "since": time.time()}
                self.stats["granted"] += 1
                return {"granted": True}
            if now >= deadline:
                return {"granted": False, "holder": {k: v for k, v in current.items() if k != "beat"},
                        "silent_s": now - current["beat"]}
            self.stats["waits"] += 1
            event = self.freed.setdefault(name, asyncio.Event())
            try:
                await asyncio.wait_for(event.wait(), deadline - now)
            except asyncio.TimeoutError:
                pass

    async def beat(self, name: str, token: str) -> bool:
        current = self.leases.get(name)
        if current is None or current["token"] != token:
            return False
        current["beat"] = time.monotonic()
        return True

    async def release(self, name: str, token: str) -> None:
        current = self.leases.get(name)
        if current is not None and current["token"] == token:
            self._free(name)

    async def state(self) -> dict:
        return {"held": {n: {k: v for k, v in h.items() if k != "beat"} for n, h in self.leases.items()},
                **self.stats}


def actor_name(store_id: str) -> str:
    return "prunetune-store-" + hashlib.sha256(store_id.encode()).hexdigest()[:16]


def coordinator_for(store_id: str):
    """The store's coordinator, created (detached, zero CPUs, on this node) if no process has yet.

    Detached, so sweeps sharing a store on one cluster share its leases, and a driver killed mid-sweep
    leaves the leases of its dead trials for the resume to take over rather than forgetting them."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    name = actor_name(store_id)
    try:
        return ray.get_actor(name, namespace=NAMESPACE)
    except ValueError:
        pass
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
    return ray.remote(LeaseCoordinator).options(
        name=name, namespace=NAMESPACE, lifetime="detached", get_if_exists=True, num_cpus=0,
        max_concurrency=1000, scheduling_strategy=here).remote()


def holder_alive(holder: dict) -> bool:
    """Whether the holder's process exists: checked here when it ran on this node, else by a probe task
    pinned to its node. A node Ray reports dead, or one the probe cannot be placed on, means dead; a probe
    that does not answer in time means alive (the heartbeat timeout still applies)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    node, pid, started = holder.get("node_id"), holder.get("pid"), holder.get("started")
    if not isinstance(pid, int) or not node:
        return True
    if node == ray.get_runtime_context().get_node_id():
        return pid_alive(pid, started)
    if not any(n["NodeID"] == node and n["Alive"] for n in ray.nodes()):
        return False
    probe = ray.remote(pid_alive).options(
        num_cpus=0, max_retries=0, scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False))
    try:
        return bool(ray.get(probe.remote(pid, started), timeout=PROBE_TIMEOUT_S))
    except ray.exceptions.GetTimeoutError:
        return True
    except (ray.exceptions.TaskUnschedulableError, ray.exceptions.NodeDiedError):
        return False


class CoordinatedLease:
    """A lease the coordinator granted; a thread sends heartbeats until it is released."""

    def __init__(self, actor, name: str, token: str, interval_s: float) -> None:
        self.actor, self.name, self.token = actor, name, token
        self._stop = threading.Event()
        threading.Thread(target=self._beat, args=(interval_s,), daemon=True).start()

    def _beat(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            try:
                self.actor.beat.remote(self.name, self.token)
            except Exception:  # noqa: BLE001 (a driver shutting down: the lease dies with it)
                return

    def release(self) -> None:
        import ray

        self._stop.set()
        try:
            ray.get(self.actor.release.remote(self.name, self.token), timeout=30)
        except Exception:  # noqa: BLE001 (the manifest already says done; the lease times out anyway)
            pass


def acquire(store_id: str, name: str, timeout_s: float, done: Callable[[], bool],
            log: Callable[[str], None], label: str) -> CoordinatedLease | None:
    """Hold the lease ``name`` of the store, or return None once ``done()`` says a peer finished it."""
    import ray

    actor = coordinator_for(store_id)
    holder = {"token": uuid.uuid4().hex, "pid": os.getpid(), "started": process_started(os.getpid()),
              "host": socket.gethostname(),
              "node_id": ray.get_runtime_context().get_node_id()}
    dead_token, said, probed = None, False, 0.0
    while True:
        answer = ray.get(actor.acquire.remote(name, holder, timeout_s, WAIT_S, dead_token))
        if answer["granted"]:
            return CoordinatedLease(actor, name, holder["token"], timeout_s / 4)
        dead_token = None
        if done():
            return None
        other = answer["holder"]
        if not said:
            log(f"artifact store: waiting for {label} (computed by {other.get('host')} pid {other.get('pid')})")
            said = True
        if other.get("node_id") != holder["node_id"]:  # a probe task costs a worker: not every wait
            if time.monotonic() - probed < REMOTE_PROBE_EVERY_S:
                continue
            probed = time.monotonic()
        if not holder_alive(other):
            log(f"artifact store: taking over the lease on {label} from dead pid {other.get('pid')} "
                f"on {other.get('host')}")
            dead_token = other["token"]
