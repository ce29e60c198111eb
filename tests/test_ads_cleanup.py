"""A stream leaves nothing behind wherever it is cancelled, even twice: every cancellation point.

gRPC cancels a handler when its connection goes, at whatever `await` it is in, and again if the
cleanup awaits (that is how streams leaked). Here the servicer runs against a context that
stands in for gRPC's at its seam (`peer`, `write`, `set_code`...), so that the test can cancel
the handler after each step of the event loop in turn, and its cleanup once more after each
of its own steps; every combination is tried, for both protocols, and with a pacer that makes
every step but the first of a loop turn wait for a later one (server/pacer.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import grpc
import pytest
from samples import sample
from snapshots import delta_request, request
from structlog.testing import capture_logs
from test_ads_server import ONE, TWO, with_node

from xdsfleet.cache.cache import SnapshotCache
from xdsfleet.cache.typeurls import CLUSTER, ENDPOINT
from xdsfleet.server.ads import SERVICE, AdsService
from xdsfleet.server.pacer import Pacer

# Loop steps before the first cancellation: past the stream's whole life here (about 15; about
# 25 when paced).
STEPS = range(32)
# Loop steps of the cleanup before the second cancellation.
CLEANUP_STEPS = range(3)


class Context:
    """What the servicer uses of `grpc.aio.ServicerContext`; each await yields to the loop."""

    def __init__(self, *, write_fails: bool) -> None:
        self.write_fails = write_fails
        self.code: grpc.StatusCode | None = None

    def peer(self) -> str:
        return "ipv4:127.0.0.1:1"

    def auth_context(self) -> dict[str, Any]:
        return {}  # no client certificate

    def invocation_metadata(self) -> tuple[Any, ...]:
        return ()

    async def send_initial_metadata(self, _metadata: Any) -> None:
        await asyncio.sleep(0)

    async def write(self, _data: bytes) -> None:
        await asyncio.sleep(0)
        if self.write_fails:
            raise RuntimeError("the call is over")

    def set_code(self, code: grpc.StatusCode) -> None:
        self.code = code

    def set_details(self, _details: str) -> None:
        pass

    def cancelled(self) -> bool:
        return False


async def requests(protocol: str) -> AsyncIterator[Any]:
    """A client's first requests, a step apart, then silence; as gRPC hands them to the
    handler (SotW requests as bytes: the stream reads them, `server/requests.py`)."""
    if protocol == "sotw":
        yield with_node(request(CLUSTER)).SerializeToString()
        await asyncio.sleep(0)
        yield request(ENDPOINT, ["a"]).SerializeToString()
    else:
        yield with_node(delta_request(CLUSTER))
        await asyncio.sleep(0)
        yield delta_request(ENDPOINT, ["a"])
    await asyncio.Event().wait()


# Paced: every step waits for a later turn. Not: the default pacer, where a lone stream's step
# waits only when it asks right after a turn's first iteration (server/pacer.py).
@pytest.mark.parametrize("paced", [False, True], ids=["default", "paced"])
@pytest.mark.parametrize("write_fails", [False, True], ids=["writes", "write-fails"])
@pytest.mark.parametrize("protocol", ["sotw", "delta"])
async def test_a_stream_cancelled_anywhere_leaves_nothing_behind(
    protocol: str, write_fails: bool, paced: bool
) -> None:
    opened = 0
    for steps in STEPS:
        for cleanup_steps in CLEANUP_STEPS:
            opened += await cancelled_after(protocol, write_fails, paced, steps, cleanup_steps)
    assert opened, "no stream got as far as opening: the cancellations tested nothing"


async def cancelled_after(
    protocol: str, write_fails: bool, paced: bool, steps: int, cleanup: int
) -> int:
    """Cancel a stream after `steps` loop steps, and again after `cleanup` more; how many
    streams opened (0 or 1)."""
    current = {"snapshot": ONE}
    cache = SnapshotCache(lambda _profile: current["snapshot"])
    # A budget of nothing: a step waits whenever another ran in the same turn, and one other
    # runs in every turn.
    pacer = Pacer(0.0) if paced else Pacer()
    hog = asyncio.create_task(_hog(pacer)) if paced else None
    service = AdsService(cache, pacer=pacer)
    method = "StreamAggregatedResources" if protocol == "sotw" else "DeltaAggregatedResources"
    details = SimpleNamespace(method=f"/{SERVICE}/{method}", invocation_metadata=())
    handler = service.handler().service(details).stream_stream
    before = sample("xdsfleet_streams", protocol=protocol)
    others = asyncio.all_tasks()
    with capture_logs() as logs:
        task = asyncio.create_task(handler(requests(protocol), Context(write_fails=write_fails)))
        for step in range(steps):
            if step == 6:  # a change arrives while the stream is being served
                current["snapshot"] = TWO
                for profile in cache.profiles():
                    cache.set(profile, TWO)
            await asyncio.sleep(0)
        task.cancel()
        for _ in range(cleanup):
            await asyncio.sleep(0)
        task.cancel()  # again, inside the cleanup: what gRPC does when the connection goes
        await asyncio.gather(task, return_exceptions=True)
        # The reader finishes on its own once cancelled; nothing else may remain.
        for _ in range(5):
            await asyncio.sleep(0)
    where = f"{protocol} cancelled after {steps} steps and {cleanup} cleanup steps"
    assert not service.streams, where
    assert not service.waiting, where
    assert not cache.profiles(), where
    assert sample("xdsfleet_streams", protocol=protocol) == before, where
    assert asyncio.all_tasks() <= others | {asyncio.current_task()}, where
    if hog is not None:
        hog.cancel()
        await asyncio.gather(hog, return_exceptions=True)
    assert not pacer._waiting, where
    assert not pacer._again, where
    opened = [e for e in logs if e["event"] == "stream_opened"]
    closed = [e for e in logs if e["event"] == "stream_closed"]
    assert len(closed) == len(opened), where
    return len(opened)


async def _hog(pacer: Pacer) -> None:
    """A paced step in every loop iteration, so that the stream's steps wait for later turns."""
    while True:
        if pacer.full():
            await pacer.next_turn()
        await asyncio.sleep(0)
