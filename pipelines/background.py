"""Work that overlaps a wait: a function on a thread of its own, its result (or exception) collected later.

Used where a sweep would otherwise do two slow things one after the other in one process: imports
while ``ray.init`` waits on its processes, MLflow's store opened while a worker imports torch, the
report drawn while Ray shuts down.
"""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable


def in_background(fn: Callable, *args: Any) -> Future:
    """``fn(*args)`` on a thread of its own; the Future's ``result()`` waits for it (and re-raises)."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prunetune")
    future = pool.submit(fn, *args)
    pool.shutdown(wait=False)  # the thread ends with ``fn``
    return future
