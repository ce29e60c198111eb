"""Which of a stream's steps ask the pacer as light (server/pacer.py), over a real gRPC server:
an ACK that changes no subscription, SotW or Delta; never a request that changes one, a NACK,
nor a writer's step.

A light step may run in the light iteration after a turn (a share of the budget), so a step
said light that is not (a subscription that builds responses) would put heavy work where a
timer is promised a short wait; and an ACK not said light waits a turn for nothing.
"""

from __future__ import annotations

import asyncio
from typing import Any

from snapshots import delta_request, request
from test_ads_server import TWO, read, serving, with_node
from waiting import eventually

from xdsfleet.cache.typeurls import CLUSTER, ENDPOINT
from xdsfleet.server.pacer import Pacer


class Recording(Pacer):
    """A pacer that notes, per reader step, whether it asked as light."""

    def __init__(self) -> None:
        super().__init__()
        self.reader: list[bool] = []
        self.writer: list[bool] = []

    def full(self, light: bool = False) -> bool:
        task = asyncio.current_task()
        name = task.get_name() if task is not None else ""
        (self.reader if name.startswith("ads-reader-") else self.writer).append(light)
        return super().full(light)


async def test_delta_acks_are_light_and_subscriptions_and_nacks_are_not() -> None:
    async with serving(TWO) as ads:
        pacer = ads.service.pacer = Recording()
        call = ads.stub().DeltaAggregatedResources()
        await call.write(with_node(delta_request(CLUSTER)))  # read before the stream is paced
        clusters = await read(call)
        await call.write(delta_request(CLUSTER, nonce=clusters.nonce))  # ACK
        await eventually(lambda: len(pacer.reader) == 1)
        await call.write(delta_request(ENDPOINT, ["a"]))  # a subscription, no nonce
        endpoints = await read(call)
        await eventually(lambda: len(pacer.reader) == 2)
        await call.write(delta_request(ENDPOINT, ["b"], nonce=endpoints.nonce))  # ACK + change
        more = await read(call)
        await eventually(lambda: len(pacer.reader) == 3)
        await call.write(delta_request(ENDPOINT, nonce=more.nonce, error="refused"))  # NACK
        await eventually(lambda: len(pacer.reader) == 4)
        assert pacer.reader == [True, False, False, False]
        assert pacer.writer
        assert not any(pacer.writer)
        call.cancel()


async def test_sotw_acks_of_the_same_names_are_light_and_other_lists_are_not() -> None:
    async with serving(TWO) as ads:
        pacer = ads.service.pacer = Recording()
        call = ads.stub().StreamAggregatedResources()
        await call.write(with_node(request(CLUSTER)))
        clusters = await read(call)
        await call.write(ack(clusters))
        await eventually(lambda: len(pacer.reader) == 1)
        await call.write(request(ENDPOINT, ["a"]))
        endpoints = await read(call)
        await eventually(lambda: len(pacer.reader) == 2)
        await call.write(ack(endpoints, ["a"]))
        await eventually(lambda: len(pacer.reader) == 3)
        # A NACK of the same names: not light (its bookkeeping is per resource).
        await call.write(request(ENDPOINT, ["a"], nonce=endpoints.nonce, error="refused"))
        await eventually(lambda: len(pacer.reader) == 4)
        await call.write(request(ENDPOINT, ["a", "b"], nonce=endpoints.nonce, version="x"))
        await read(call)
        await eventually(lambda: len(pacer.reader) == 5)
        # The first ACK of a type has no list of names kept before it: it is read whole.
        assert pacer.reader == [False, False, True, False, False]
        assert pacer.writer
        assert not any(pacer.writer)
        call.cancel()


def ack(response: Any, names: list[str] | None = None) -> Any:
    return request(
        response.type_url, names or [], nonce=response.nonce, version=response.version_info
    )
