"""One resource listed, then watched, through the real client against the API emulator."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kube_api import MEMBER_RESOURCES, TOKEN, ApiEmulator, Request
from kube_helpers import FAST, no_threads_left, service
from waiting import eventually

from xdsfleet.sources.kube.client import Access, ApiError, Cluster, TooLarge
from xdsfleet.sources.kube.resources import SERVICE_EXPORTS, SERVICES
from xdsfleet.sources.kube.settings import KubeSettings
from xdsfleet.sources.kube.watching import Absent, Changed, Event, Failed, Listed, Reflector
from xdsfleet.telemetry import metrics

__all__ = ["no_threads_left"]


class Seen:
    """What a reflector delivered, in order."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.crashes: list[BaseException] = []

    def of(self, kind: type[Event]) -> list[Event]:
        return [e for e in self.events if isinstance(e, kind)]

    def names(self) -> set[str]:
        """The objects known after applying every event, by name."""
        known: set[str] = set()
        for event in self.events:
            if isinstance(event, Listed):
                known = {item["metadata"]["name"] for item in event.items}
            elif isinstance(event, Absent):
                known = set()
            elif isinstance(event, Changed):
                name = event.obj["metadata"]["name"]
                if event.type == "DELETED":
                    known.discard(name)
                else:
                    known.add(name)
        return known


@pytest.fixture
def api() -> Iterator[ApiEmulator]:
    with ApiEmulator() as emulator:
        yield emulator


Start = Callable[..., tuple[Reflector, Seen]]


@pytest.fixture
async def start(api: ApiEmulator, tmp_path: Path) -> AsyncIterator[Start]:
    """Start reflectors on the emulator; every one is stopped (and its thread joined) after."""
    started: list[tuple[Reflector, Cluster]] = []
    loop = asyncio.get_running_loop()

    def starter(
        resource: object = SERVICES, *, settings: KubeSettings = FAST, emulator: ApiEmulator = api
    ) -> tuple[Reflector, Seen]:
        seen = Seen()
        access = Access(kubeconfig=str(emulator.kubeconfig(tmp_path / "kubeconfig")))
        cluster = Cluster(access, settings)
        reflector = Reflector(
            cluster=cluster,
            resource=resource,  # type: ignore[arg-type]
            deliver=seen.events.append,
            on_crash=seen.crashes.append,
            loop=loop,
            settings=settings,
            name="watch-test",
        )
        reflector.start()
        started.append((reflector, cluster))
        return reflector, seen

    yield starter
    for reflector, cluster in started:
        reflector.stop()
        assert await asyncio.to_thread(reflector.join, 5), "the watch thread did not end"
        cluster.close()


async def test_a_list_then_a_watch_delivers_every_object_and_every_change(
    api: ApiEmulator, start: Start
) -> None:
    api.apply(SERVICES, service("a"))
    api.apply(SERVICES, service("b"))
    _, seen = start()
    await eventually(lambda: seen.names() == {"a", "b"})
    [listed] = seen.of(Listed)
    assert isinstance(listed, Listed)
    assert listed.sequence == 1
    api.apply(SERVICES, service("c"))
    api.delete(SERVICES, "a")
    await eventually(lambda: seen.names() == {"b", "c"})
    assert [e.type for e in seen.of(Changed) if isinstance(e, Changed)] == ["ADDED", "DELETED"]
    assert api.lists(SERVICES) == 1
    assert not seen.crashes


async def test_the_server_side_timeout_ends_a_quiet_watch_which_resumes_without_a_list(
    api: ApiEmulator, start: Start
) -> None:
    _, seen = start()
    await eventually(lambda: len(seen.of(Listed)) == 1)
    # FAST asks the server to end each watch after 1-2 s.
    await eventually(lambda: sum(r.watch for r in api.requests) >= 2, timeout=8)
    api.apply(SERVICES, service("late"))
    await eventually(lambda: seen.names() == {"late"})
    assert api.lists(SERVICES) == 1


@pytest.fixture
def chatty() -> Iterator[ApiEmulator]:
    """An emulator that sends bookmarks every 0.2 s, not every minute."""
    with ApiEmulator(bookmark_seconds=0.2) as emulator:
        yield emulator


async def test_bookmarks_keep_the_resume_version_fresh_so_no_list_is_needed(
    chatty: ApiEmulator, start: Start
) -> None:
    api = chatty
    api.apply(SERVICES, service("a"))
    slow = dataclasses.replace(FAST, watch_seconds=60)
    _, seen = start(settings=slow, emulator=api)
    await eventually(lambda: len(seen.of(Listed)) == 1)
    # Other resources move the version on; only a bookmark tells this watch about it.
    for i in range(5):
        api.apply(SERVICE_EXPORTS, {"metadata": {"name": f"other-{i}", "namespace": "default"}})
    latest = int(api.get(SERVICE_EXPORTS, "other-4")["metadata"]["resourceVersion"])  # type: ignore[index]
    await eventually(lambda: max(api.bookmarks, default=0) >= latest)
    # The history before now is gone: a watch resumed from the list's version would get 410.
    api.compact()
    api.drop_watches()
    api.apply(SERVICES, service("b"))
    await eventually(lambda: seen.names() == {"a", "b"})
    assert api.lists(SERVICES) == 1


async def test_a_410_gone_makes_it_list_again(start: Start, tmp_path: Path) -> None:
    # No bookmarks in time: the watch keeps the list's version.
    with ApiEmulator(bookmark_seconds=3600) as quiet:
        quiet.apply(SERVICES, service("a"))
        _, seen = start(emulator=quiet, settings=dataclasses.replace(FAST, watch_seconds=60))
        await eventually(lambda: len(seen.of(Listed)) == 1)
        quiet.apply(SERVICE_EXPORTS, {"metadata": {"name": "other", "namespace": "default"}})
        quiet.compact()
        quiet.drop_watches()
        await eventually(lambda: len(seen.of(Listed)) == 2)
        quiet.apply(SERVICES, service("b"))
        await eventually(lambda: seen.names() == {"a", "b"})
        assert quiet.lists(SERVICES) == 2
        assert not seen.of(Failed)


@pytest.mark.parametrize("abrupt", [False, True], ids=["closed", "reset"])
async def test_a_dropped_watch_reconnects_from_where_it_was(
    api: ApiEmulator, start: Start, abrupt: bool
) -> None:
    api.apply(SERVICES, service("a"))
    _, seen = start(settings=dataclasses.replace(FAST, watch_seconds=60))
    await eventually(lambda: len(seen.of(Listed)) == 1)
    api.drop_watches(abrupt=abrupt)
    api.apply(SERVICES, service("b"))
    await eventually(lambda: seen.names() == {"a", "b"})
    assert api.lists(SERVICES) == 1
    assert not seen.of(Failed)


async def test_an_unreachable_api_is_reported_and_listed_again_when_it_is_back(
    api: ApiEmulator, start: Start
) -> None:
    api.apply(SERVICES, service("a"))
    _, seen = start()
    await eventually(lambda: len(seen.of(Listed)) == 1)
    api.go_down()
    await eventually(lambda: bool(seen.of(Failed)))
    api.delete(SERVICES, "a")
    api.apply(SERVICES, service("b"))
    api.come_back()
    await eventually(lambda: len(seen.of(Listed)) == 2)
    assert seen.names() == {"b"}


async def test_a_resource_type_the_server_lacks_is_reported_absent(start: Start) -> None:
    without_exports = tuple(r for r in MEMBER_RESOURCES if r is not SERVICE_EXPORTS)
    with ApiEmulator(kinds=without_exports) as bare:
        _, seen = start(SERVICE_EXPORTS, emulator=bare)
        await eventually(lambda: len(seen.of(Absent)) >= 2)  # and it looks again
        assert not seen.of(Listed)


async def test_a_relist_on_request_is_confirmed_by_its_sequence(
    api: ApiEmulator, start: Start
) -> None:
    reflector, seen = start(settings=dataclasses.replace(FAST, watch_seconds=60))
    await eventually(lambda: len(seen.of(Listed)) == 1)
    wanted = reflector.relist()
    await eventually(
        lambda: any(isinstance(e, Listed) and e.sequence >= wanted for e in seen.events)
    )
    assert api.lists(SERVICES) == 2


async def test_stop_ends_a_blocked_watch_at_once(api: ApiEmulator, start: Start) -> None:
    # A long server-side timeout and a long read timeout: only the interrupt can end it soon.
    patient = dataclasses.replace(FAST, watch_seconds=600, watch_read_margin=600)
    reflector, seen = start(settings=patient)
    await eventually(lambda: len(seen.of(Listed)) == 1 and api.open_watches() == 1)
    reflector.stop()
    assert await asyncio.to_thread(reflector.join, 2)


# --- A 404 after a list (a CRD an API server serves late around a restart) ---


async def test_a_brief_404_after_a_list_keeps_the_objects(api: ApiEmulator, start: Start) -> None:
    api.apply(SERVICE_EXPORTS, {"metadata": {"name": "shop", "namespace": "default"}})
    _, seen = start(SERVICE_EXPORTS, settings=dataclasses.replace(FAST, watch_seconds=60))
    await eventually(lambda: seen.names() == {"shop"})
    # The kind answers 404 and leaves discovery for half a second; its watch ends.
    api.hide(SERVICE_EXPORTS, seconds=0.5)
    await eventually(lambda: any(r.status == 404 for r in api.requests))
    await eventually(lambda: len(seen.of(Listed)) == 2)
    assert not seen.of(Absent)
    assert seen.names() == {"shop"}


async def test_a_type_discovery_stops_listing_is_absent_after_the_confirmation_time(
    api: ApiEmulator, start: Start
) -> None:
    api.apply(SERVICE_EXPORTS, {"metadata": {"name": "shop", "namespace": "default"}})
    _, seen = start(SERVICE_EXPORTS)
    await eventually(lambda: len(seen.of(Listed)) == 1)
    api.hide(SERVICE_EXPORTS)
    # FAST confirms for 1 s: the objects go only then.
    await eventually(lambda: bool(seen.of(Absent)))
    assert seen.names() == set()
    discovery = [r for r in api.requests if r.path == "/apis/multicluster.x-k8s.io/v1alpha1"]
    assert discovery
    assert all(r.status == 404 for r in discovery)
    api.unhide(SERVICE_EXPORTS)
    await eventually(lambda: seen.names() == {"shop"})


# --- Watch failures: retried from the same version, the list kept for when it is needed ---

PATIENT = dataclasses.replace(FAST, watch_seconds=60, watch_retry_seconds=30)


def watches_after(api: ApiEmulator, moment: float) -> list[Request]:
    return [r for r in api.requests if r.watch and r.at > moment]


async def test_a_watch_refused_with_429_is_retried_from_its_version_after_retry_after(
    api: ApiEmulator, start: Start
) -> None:
    api.apply(SERVICES, service("a"))
    _, seen = start(settings=PATIENT)
    await eventually(lambda: len(seen.of(Listed)) == 1 and api.open_watches() == 1)
    version = api.requests[-1].query["resourceVersion"]
    api.fault(429, count=2, retry_after=1)
    moment = time.monotonic()
    api.drop_watches()
    await eventually(lambda: api.open_watches() == 1 and len(watches_after(api, moment)) == 3)
    refused, refused_again, accepted = watches_after(api, moment)
    assert [refused.status, refused_again.status] == [429, 429]
    # Retry-After: 1 is honoured, and every attempt resumes from the version it had.
    assert refused_again.at - refused.at >= 1
    assert accepted.at - refused_again.at >= 1
    assert {r.query["resourceVersion"] for r in (refused, refused_again, accepted)} == {version}
    api.apply(SERVICES, service("b"))
    await eventually(lambda: seen.names() == {"a", "b"})
    assert api.lists(SERVICES) == 1
    assert not seen.of(Failed)


@pytest.mark.parametrize("status", [503, 504])
async def test_a_busy_server_gets_the_watch_retried_without_a_list_or_a_failure(
    api: ApiEmulator, start: Start, status: int
) -> None:
    _, seen = start(settings=PATIENT)
    await eventually(lambda: len(seen.of(Listed)) == 1 and api.open_watches() == 1)
    api.fault(status, count=3)
    api.drop_watches()
    api.apply(SERVICES, service("late"))
    await eventually(lambda: seen.names() == {"late"})
    assert sum(r.status == status for r in api.requests) == 3
    assert api.lists(SERVICES) == 1
    assert not seen.of(Failed)


async def test_connection_refused_for_a_moment_retries_the_watch_without_a_failure(
    api: ApiEmulator, start: Start
) -> None:
    _, seen = start(settings=PATIENT)
    await eventually(lambda: len(seen.of(Listed)) == 1 and api.open_watches() == 1)
    refused = metrics.KUBE_WATCH_RESTARTS.labels(SERVICES.plural, "refused")
    before = refused._value.get()
    api.go_down()  # an API server rolling over: connections refused
    await eventually(lambda: refused._value.get() >= before + 2)
    api.come_back()
    api.apply(SERVICES, service("late"))
    await eventually(lambda: seen.names() == {"late"})
    assert api.lists(SERVICES) == 1
    assert not seen.of(Failed)


async def test_lists_read_the_cache_then_not_older_than_the_last_version_and_etcd_after_504(
    api: ApiEmulator, start: Start
) -> None:
    api.apply(SERVICES, service("a"))
    reflector, seen = start(settings=PATIENT)
    await eventually(lambda: len(seen.of(Listed)) == 1 and api.open_watches() == 1)
    api.apply(SERVICES, service("b"))
    await eventually(lambda: seen.names() == {"a", "b"})
    last = api.get(SERVICES, "b")["metadata"]["resourceVersion"]  # type: ignore[index]
    # A relist (to confirm a mass removal) must not go back in time: not older than `last`.
    reflector.relist()
    await eventually(lambda: len(seen.of(Listed)) == 2)
    # The watch lands on an API server whose cache lags: 504 ResourceVersionTooLarge.
    api.fault(504, too_large=True)
    api.drop_watches()
    await eventually(lambda: len(seen.of(Listed)) == 3)
    lists = [r for r in api.requests if r.method == "GET" and not r.watch]
    assert [r.query.get("resourceVersion") for r in lists] == ["0", last, None]
    assert not seen.of(Failed)


def test_the_api_refuses_a_bad_version_and_one_it_has_not_reached_after_a_wait(
    tmp_path: Path,
) -> None:
    with ApiEmulator(too_large_seconds=0.2) as quick:
        cluster = Cluster(Access(kubeconfig=str(quick.kubeconfig(tmp_path / "k"))), FAST)
        try:
            with pytest.raises(ApiError) as bad:
                cluster.list(SERVICES, resource_version="yesterday")
            assert bad.value.status == 400
            with pytest.raises(TooLarge) as ahead:
                cluster.list(SERVICES, resource_version="1000")
            assert ahead.value.retry_after == 1
        finally:
            cluster.close()


@pytest.mark.parametrize("expiring", [False, True], ids=["pages", "expired-token"])
def test_a_paged_list_gets_every_object_and_restarts_whole_when_its_token_expired(
    tmp_path: Path, expiring: bool
) -> None:
    with ApiEmulator(continue_seconds=0 if expiring else 300) as paging:
        for i in range(5):
            paging.apply(SERVICES, service(f"s{i}"))
        cluster = Cluster(Access(kubeconfig=str(paging.kubeconfig(tmp_path / "k"))), FAST)
        try:
            listing = cluster.list(SERVICES, limit=2)
        finally:
            cluster.close()
        assert [s["metadata"]["name"] for s in listing.items] == [f"s{i}" for i in range(5)]
        assert listing.resource_version == "5"
        sent = [(r.query.get("limit"), "continue" in r.query, r.status) for r in paging.requests]
        if expiring:
            # The second page finds its token expired (410): one whole list instead.
            assert sent == [("2", False, 200), ("2", True, 410), (None, False, 200)]
        else:
            assert sent == [("2", False, 200), ("2", True, 200), ("2", True, 200)]


def test_the_pages_of_a_list_are_one_snapshot_at_the_first_pages_version() -> None:
    """What the real API server does for a paged list, over plain HTTP: `remainingItemCount`,
    every page at the first one's resourceVersion however the objects change meanwhile, and a
    token used after compaction answered 410 `Expired`."""
    with ApiEmulator() as paging:
        for i in range(5):
            paging.apply(SERVICES, service(f"s{i}"))

        def get(query: str) -> dict[str, Any]:
            url = f"{paging.url}/api/v1/services?{query}"
            asked = urllib.request.Request(url, headers={"Authorization": f"Bearer {TOKEN}"})
            try:
                with urllib.request.urlopen(asked, timeout=5) as answer:
                    return dict(json.load(answer))
            except urllib.error.HTTPError as error:
                return {"code": error.code, **json.load(error)}

        first = get("limit=2")
        assert first["metadata"]["remainingItemCount"] == 3
        paging.apply(SERVICES, service("s4", port=81))  # changed after the first page
        paging.apply(SERVICES, service("s5"))  # added after it
        second = get(f"limit=2&continue={first['metadata']['continue']}")
        third = get(f"limit=2&continue={second['metadata']['continue']}")
        pages = (first, second, third)
        assert [p["metadata"]["resourceVersion"] for p in pages] == ["5"] * 3
        assert [s["metadata"]["name"] for p in pages for s in p["items"]] == [
            f"s{i}" for i in range(5)
        ]
        assert third["items"][-1]["spec"]["ports"][0]["port"] == 80
        assert "continue" not in third["metadata"]
        again = get("limit=2")
        paging.expire_continues()
        expired = get(f"limit=2&continue={again['metadata']['continue']}")
        assert (expired["code"], expired["reason"]) == (410, "Expired")


async def test_an_update_that_changes_nothing_keeps_the_version_and_says_nothing(
    api: ApiEmulator, start: Start
) -> None:
    first = api.apply(SERVICES, service("a"))
    _, seen = start(settings=PATIENT)
    await eventually(lambda: len(seen.of(Listed)) == 1 and api.open_watches() == 1)
    again = api.apply(SERVICES, service("a"))
    assert again["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]
    api.apply(SERVICES, service("b"))
    await eventually(lambda: seen.names() == {"a", "b"})
    changed = [e.obj["metadata"]["name"] for e in seen.events if isinstance(e, Changed)]
    assert changed == ["b"]


async def test_a_busy_resource_does_not_push_a_quiet_ones_history_out(
    start: Start,
) -> None:
    with ApiEmulator(window=10) as small:
        small.apply(SERVICES, service("a"))
        _, seen = start(emulator=small, settings=PATIENT)
        await eventually(lambda: len(seen.of(Listed)) == 1 and small.open_watches() == 1)
        for i in range(30):  # Leases renewing, say: far more than the window
            small.apply(SERVICE_EXPORTS, {"metadata": {"name": f"e{i}", "namespace": "default"}})
        small.drop_watches()
        small.apply(SERVICES, service("b"))
        await eventually(lambda: seen.names() == {"a", "b"})
        assert small.lists(SERVICES) == 1  # resumed, no 410


async def test_a_cluster_is_reached_over_tls_trusting_the_kubeconfigs_authority(
    start: Start, tmp_path: Path
) -> None:
    with ApiEmulator(tls=True) as secure:
        secure.apply(SERVICES, service("a"))
        _, seen = start(emulator=secure)
        await eventually(lambda: seen.names() == {"a"})
        # Without the authority, the server's certificate is refused, and said so.
        untrusting = yaml.safe_load(secure.kubeconfig_text())
        del untrusting["clusters"][0]["cluster"]["certificate-authority-data"]
        cluster = Cluster(Access(kubeconfig_text=yaml.safe_dump(untrusting)), FAST)
        try:
            with pytest.raises(ApiError, match="CERTIFICATE_VERIFY_FAILED"):
                await asyncio.to_thread(cluster.list, SERVICES)
        finally:
            cluster.close()
