"""The lease coordinator's rules, on the class itself (no Ray): one holder per name, a release wakes a
waiter at once, a silent holder expires, a holder reported dead is replaced, and a later process that
reuses a dead holder's pid is not taken for it."""
import asyncio
import os
import time

from training.coordinator import LeaseCoordinator
from training.processes import pid_alive, process_started


def _holder(token: str) -> dict:
    return {"token": token, "pid": 1, "node_id": "n", "host": "h"}


def test_one_holder_and_a_release_wakes_the_waiter():
    async def scenario():
        c = LeaseCoordinator()
        assert (await c.acquire("s/k", _holder("a"), timeout_s=60))["granted"]
        refused = await c.acquire("s/k", _holder("b"), timeout_s=60, wait_s=0.2)
        assert not refused["granted"] and refused["holder"]["token"] == "a"
        waiter = asyncio.ensure_future(c.acquire("s/k", _holder("b"), timeout_s=60, wait_s=30))
        await asyncio.sleep(0.2)
        t0 = time.monotonic()
        await c.release("s/k", "a")
        assert (await waiter)["granted"] and time.monotonic() - t0 < 1.0
        await c.release("s/k", "a")  # a stale release does not free b's lease
        assert not (await c.acquire("s/k", _holder("c"), timeout_s=60, wait_s=0))["granted"]

    asyncio.run(scenario())


def test_a_silent_holder_expires_and_a_dead_one_is_replaced():
    async def scenario():
        c = LeaseCoordinator()
        assert (await c.acquire("x", _holder("a"), timeout_s=0.5))["granted"]
        assert not (await c.acquire("x", _holder("b"), timeout_s=0.5, wait_s=0.1))["granted"]
        assert await c.beat("x", "a")
        await asyncio.sleep(0.7)  # no heartbeat for longer than the timeout
        assert (await c.acquire("x", _holder("b"), timeout_s=0.5, wait_s=0))["granted"]
        assert not await c.beat("x", "a")  # the old holder learns it lost the lease
        assert (await c.acquire("x", _holder("c"), timeout_s=60, wait_s=0, dead_token="b"))["granted"]
        assert not (await c.acquire("x", _holder("d"), timeout_s=60, wait_s=0, dead_token="b"))["granted"]
        assert (await c.state())["taken_over"] == 2

    asyncio.run(scenario())


def test_a_reused_pid_is_not_the_holder():
    me = process_started(os.getpid())
    assert pid_alive(os.getpid(), me) and not pid_alive(os.getpid(), "1")
    assert not pid_alive(2**22 + 12345, me)
