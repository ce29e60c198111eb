"""A stream that ends leaves no memory behind, even when the heap was frozen while it was open
(`gc.freeze()` after publishes and at quiet moments keeps the fleet out of the collector's
passes).

A stream's objects form reference cycles when it ends (the CancelledError's traceback holds the
frames of `_serve`, `_run` and `_read`, whose locals hold its `StreamInfo` and machine): only the
cyclic collector frees them, and an ordinary pass never looks at frozen objects. Every stream
open during a freeze that ends later would be kept for good, with what its machine holds, and
under reconnect churn the server would grow without bound: the collector's full pass
(`pipeline.collector.Collector.full`, unfreeze and collect) is what frees them.
"""

from __future__ import annotations

import asyncio
import gc
import weakref
from types import SimpleNamespace

import pytest
from test_ads_cleanup import Context, requests
from test_ads_server import ONE

from xdsfleet.cache.cache import SnapshotCache
from xdsfleet.pipeline.collector import Collector
from xdsfleet.server.ads import SERVICE, AdsService


@pytest.mark.parametrize("protocol", ["sotw", "delta"])
async def test_a_stream_open_during_a_freeze_is_freed_by_a_full_pass_once_it_ends(
    protocol: str,
) -> None:
    cache = SnapshotCache(lambda _profile: ONE)
    service = AdsService(cache)
    method = "StreamAggregatedResources" if protocol == "sotw" else "DeltaAggregatedResources"
    details = SimpleNamespace(method=f"/{SERVICE}/{method}", invocation_metadata=())
    handler = service.handler().service(details).stream_stream
    task = asyncio.create_task(handler(requests(protocol), Context(write_fails=False)))
    try:
        for _ in range(12):
            await asyncio.sleep(0)
        machine = weakref.ref(next(iter(service.streams.values())).machine)
        gc.freeze()  # what `Publisher.publish_in_slices` does after each publish
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        del task
        for _ in range(10):
            await asyncio.sleep(0)
        gc.collect()
        assert machine() is not None  # an ordinary pass leaves frozen cycles alone
        Collector().full()
        assert machine() is None
    finally:
        gc.unfreeze()
