"""Pages of member lists decoded and parsed in worker processes (`sources.kube.decoding`): the
same objects as in the reflector's thread, the list-then-watch handoff exact, and workers that
die or stop leave no page undecoded and no process behind."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from kube_api import ApiEmulator
from kube_helpers import (
    FAST,
    MEMBER,
    endpoint_slice,
    no_threads_left,
    ready_addresses,
    service,
    service_export,
)
from structlog.testing import capture_logs
from waiting import eventually

from xdsfleet.model.fleet import MemberState
from xdsfleet.sources.kube.client import Access, Cluster
from xdsfleet.sources.kube.decoding import Decoder, usable_cores
from xdsfleet.sources.kube.members import MemberWatcher
from xdsfleet.sources.kube.objects import parse_object
from xdsfleet.sources.kube.pages import Page, Unreadable, decode_page, prepare
from xdsfleet.sources.kube.resources import ENDPOINT_SLICES, SERVICE_EXPORTS, SERVICES

__all__ = ["no_threads_left"]

PARSE_SLICE = functools.partial(
    prepare, functools.partial(parse_object, ENDPOINT_SLICES, origin="member east")
)


def _page(items: list[dict[str, object]], continue_token: str = "") -> bytes:
    metadata = {"resourceVersion": "42", **({"continue": continue_token} if continue_token else {})}
    return json.dumps({"kind": "EndpointSliceList", "metadata": metadata, "items": items}).encode()


def _slices(count: int) -> list[dict[str, object]]:
    slices = []
    for n in range(count):
        obj = endpoint_slice(f"svc-{n}", f"10.0.{n // 250}.{n % 250 + 1}", name=f"svc-{n}-a")
        obj["metadata"] |= {"uid": f"uid-{n}", "generation": 1}
        slices.append(obj)
    # One the parser refuses: it comes back as a refusal, not an error.
    bad = endpoint_slice("bad", "not-an-address", name="bad-a")
    bad["metadata"] |= {"uid": "uid-bad"}
    return [*slices, bad]


@pytest.fixture
def decoder() -> Iterator[Decoder]:
    """A pool from the first page on."""
    running = Decoder(pool_min_bytes=0, workers=2)
    yield running
    running.close()
    assert not running._workers  # every worker process was waited for


def _pooled(decoder: Decoder, data: bytes) -> Page:
    """`data` decoded by the pool (the first pages are decoded here while it starts)."""
    deadline = time.monotonic() + 30
    while True:
        before = decoder.pooled
        page = decoder.decode(data, PARSE_SLICE)
        if decoder.pooled > before:
            return page
        assert time.monotonic() < deadline, "the decode workers never started"
        time.sleep(0.05)


def test_a_page_decoded_by_the_workers_equals_one_decoded_here(decoder: Decoder) -> None:
    data = _page(_slices(300), continue_token="page-7")
    here = decode_page(data, PARSE_SLICE)
    assert _pooled(decoder, data) == here
    assert here.continue_token == "page-7"
    assert here.resource_version == "42"
    assert len(here.items) == 301
    refused = [p for p in here.items if p.problems]
    assert [p.key for p in refused] == [("default", "bad-a")]
    assert decoder.pools_started == 1


def test_a_page_that_is_not_json_is_unreadable_from_the_workers_too(decoder: Decoder) -> None:
    _pooled(decoder, _page(_slices(1)))
    with pytest.raises(Unreadable):
        decoder.decode(b"<html>502 Bad Gateway</html>", PARSE_SLICE)
    with pytest.raises(Unreadable):
        decoder.decode(b"[1, 2]", PARSE_SLICE)
    assert decoder.decode(_page(_slices(2)), PARSE_SLICE).items  # the worker lives on


def test_a_worker_that_dies_leaves_every_page_decoded_here(decoder: Decoder) -> None:
    data = _page(_slices(20))
    expected = decode_page(data, PARSE_SLICE)
    _pooled(decoder, data)
    with capture_logs() as logs:
        for worker in list(decoder._workers):
            os.kill(worker.process.pid, signal.SIGKILL)
            worker.process.wait()
        assert [decoder.decode(data, PARSE_SLICE) for _ in range(3)] == [expected] * 3
    assert [e for e in logs if e["event"] == "decode_workers_failed"]
    pooled = decoder.pooled
    assert decoder.decode(data, PARSE_SLICE) == expected
    assert decoder.pooled == pooled  # no pool again: it broke once


def test_small_lists_never_start_a_pool_and_an_idle_pool_stops() -> None:
    small = Decoder(workers=1)  # the default threshold
    try:
        for _ in range(20):
            small.decode(_page(_slices(10)), PARSE_SLICE)
        assert small.pools_started == 0
    finally:
        small.close()
    idle = Decoder(workers=1, pool_min_bytes=0, idle_seconds=1.0)
    try:
        _pooled(idle, _page(_slices(5)))
        processes = [w.process for w in idle._workers]
        deadline = time.monotonic() + 10
        while any(p.poll() is None for p in processes):
            assert time.monotonic() < deadline, "an idle pool kept its workers"
            time.sleep(0.05)
        # The next big enough decoding starts a new one.
        _pooled(idle, _page(_slices(5)))
        assert idle.pools_started == 2
    finally:
        idle.close()


@pytest.fixture
def api() -> Iterator[ApiEmulator]:
    with ApiEmulator(cache_pages=True) as emulator:
        yield emulator


@pytest.fixture
async def member(api: ApiEmulator, tmp_path: Path) -> AsyncIterator[tuple[MemberWatcher, Decoder]]:
    """A member whose lists go through a pool from the first page, in pages of 7 objects."""
    decoder = Decoder(pool_min_bytes=0, workers=2)
    crashes: list[BaseException] = []
    settings = dataclasses.replace(FAST, list_page_size=7)
    kubeconfig = api.kubeconfig(tmp_path / "east.kubeconfig")
    watcher = MemberWatcher(
        member=MEMBER,
        cluster=Cluster(Access(kubeconfig=str(kubeconfig)), settings),
        on_state=lambda _: None,
        on_crash=crashes.append,
        settings=settings,
        decoder=decoder,
    )
    yield watcher, decoder
    await watcher.stop()
    await asyncio.to_thread(decoder.close)
    assert not crashes


def _endpoints(state: MemberState) -> set[str]:
    return set().union(*ready_addresses(state).values())


async def test_a_member_listed_through_the_workers_then_watched_misses_no_change(
    api: ApiEmulator, member: tuple[MemberWatcher, Decoder]
) -> None:
    """Relisted until a list went through the pool; changes made between the lists and during
    the watch all arrive, once: the watch starts from the pooled list's resourceVersion."""
    watcher, decoder = member
    addresses = [f"10.2.0.{n}" for n in range(1, 41)]
    for n, address in enumerate(addresses):
        api.apply(SERVICES, service(f"s{n}"))
        api.apply(SERVICE_EXPORTS, service_export(f"s{n}"))
        api.apply(ENDPOINT_SLICES, endpoint_slice(f"s{n}", address, name=f"s{n}-a"))
    watcher.start()
    await watcher.settled.wait()
    while decoder.pooled == 0:
        await asyncio.sleep(0.05)
        watcher._group.relist(ENDPOINT_SLICES)
    sequence = watcher._group.mirrors[ENDPOINT_SLICES].sequence
    await eventually(lambda: watcher._group.mirrors[ENDPOINT_SLICES].sequence > sequence)
    await eventually(lambda: _endpoints(watcher.state) == set(addresses))
    api.apply(ENDPOINT_SLICES, endpoint_slice("s0", "10.3.0.1", name="s0-a"))
    api.delete(ENDPOINT_SLICES, "s1-a")
    api.apply(SERVICES, service("s40"))
    api.apply(SERVICE_EXPORTS, service_export("s40"))
    api.apply(ENDPOINT_SLICES, endpoint_slice("s40", "10.3.0.2", name="s40-a"))
    expected = set(addresses[2:]) | {"10.3.0.1", "10.3.0.2"}
    await eventually(lambda: _endpoints(watcher.state) == expected)
    assert decoder.pooled > 0


def test_the_workers_follow_a_cgroup_cpu_quota(tmp_path: Path) -> None:
    affinity = len(os.sched_getaffinity(0))
    quota = tmp_path / "cpu.max"
    assert usable_cores(str(tmp_path / "absent")) == affinity
    quota.write_text("max 100000\n")
    assert usable_cores(str(quota)) == affinity
    quota.write_text("150000 100000\n")  # a pod limited to 1.5 CPUs
    assert usable_cores(str(quota)) == 1
    quota.write_text("50000 100000\n")
    assert usable_cores(str(quota)) == 1
