"""Kubeconfigs whose user runs an exec credential plugin (EKS, GKE, AKS), against the API
emulator's plugin script and its expiring tokens."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import yaml
from kube_api import ApiEmulator
from kube_helpers import FAST, no_threads_left, service
from waiting import eventually

from xdsfleet.sources.kube.client import Access, ApiError, Cluster
from xdsfleet.sources.kube.resources import SERVICES
from xdsfleet.sources.kube.settings import KubeSettings
from xdsfleet.sources.kube.watching import Changed, Event, Failed, Listed, Reflector

__all__ = ["no_threads_left"]


@pytest.fixture
def api() -> Iterator[ApiEmulator]:
    with ApiEmulator() as emulator:
        emulator.apply(SERVICES, service("a"))
        yield emulator


def cluster_for(api: ApiEmulator, tmp_path: Path, *, lifetime: int = 3600) -> Cluster:
    kubeconfig = api.exec_kubeconfig(tmp_path / "exec.kubeconfig", lifetime=lifetime)
    return Cluster(Access(kubeconfig=str(kubeconfig)), FAST)


Start = Callable[[Cluster, KubeSettings], list[Event]]
PATIENT = dataclasses.replace(FAST, watch_seconds=60)


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    started: list[tuple[Reflector, Cluster]] = []

    def starter(cluster: Cluster, settings: KubeSettings = PATIENT) -> list[Event]:
        events: list[Event] = []
        reflector = Reflector(
            cluster=cluster,
            resource=SERVICES,
            deliver=events.append,
            on_crash=events.append,  # type: ignore[arg-type]
            loop=asyncio.get_running_loop(),
            settings=settings,
            name="watch-credentials",
        )
        reflector.start()
        started.append((reflector, cluster))
        return events

    yield starter
    for reflector, cluster in started:
        reflector.stop()
        assert await asyncio.to_thread(reflector.join, 5)
        cluster.close()


def test_building_a_cluster_runs_no_plugin_and_the_first_request_does(
    api: ApiEmulator, tmp_path: Path
) -> None:
    # A minute: well within the kubernetes client's own 5-minute margin, which would run the
    # plugin again on every request.
    cluster = cluster_for(api, tmp_path, lifetime=60)
    try:
        assert api.issued == 0  # nothing slow on the event loop
        assert [s["metadata"]["name"] for s in cluster.list(SERVICES).items] == ["a"]
        cluster.list(SERVICES)
        cluster.list(SERVICES)
        assert api.issued == 1
    finally:
        cluster.close()


def test_a_plugin_that_fails_says_why_on_every_request(api: ApiEmulator, tmp_path: Path) -> None:
    api.issue_tokens(False)
    cluster = cluster_for(api, tmp_path)
    try:
        for _ in range(2):
            with pytest.raises(ApiError, match="token service: no tokens for now"):
                cluster.list(SERVICES)
        assert not [r for r in api.requests if r.path == SERVICES.path()]  # none unauthenticated
        api.issue_tokens(True)
        assert len(cluster.list(SERVICES).items) == 1
    finally:
        cluster.close()


async def test_credentials_are_refreshed_before_they_expire(
    api: ApiEmulator, tmp_path: Path, start: Start
) -> None:
    # Tokens last 2 s; watches end every 1-2 s (FAST), and each new one needs a valid token.
    events = start(cluster_for(api, tmp_path, lifetime=2), FAST)
    await eventually(lambda: api.issued >= 3)
    api.apply(SERVICES, service("b"))
    await eventually(lambda: any(isinstance(e, Changed) for e in events))
    assert not [r for r in api.requests if r.status == 401]
    assert not [e for e in events if isinstance(e, Failed)]


async def test_a_revoked_credential_is_refreshed_on_401_and_the_request_sent_again(
    api: ApiEmulator, tmp_path: Path, start: Start
) -> None:
    events = start(cluster_for(api, tmp_path), PATIENT)
    await eventually(lambda: any(isinstance(e, Listed) for e in events) and api.open_watches() == 1)
    api.revoke_tokens()
    api.drop_watches()
    api.apply(SERVICES, service("b"))
    await eventually(lambda: any(isinstance(e, Changed) for e in events))
    assert [r.status for r in api.requests if r.status == 401] == [401]
    assert api.issued == 2
    assert not [e for e in events if isinstance(e, Failed)]


def test_a_rotated_token_file_is_read_again_when_the_server_refuses_the_old_token(
    api: ApiEmulator, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(api.token())
    document = yaml.safe_load(api.kubeconfig_text())
    document["users"][0]["user"] = {"tokenFile": str(token_file)}
    cluster = Cluster(Access(kubeconfig_text=yaml.safe_dump(document)), FAST)
    try:
        assert len(cluster.list(SERVICES).items) == 1
        api.revoke_tokens()
        token_file.write_text(api.token())  # whoever rotates it wrote a new one
        assert len(cluster.list(SERVICES).items) == 1
        assert [r.status for r in api.requests if r.status == 401] == [401]
    finally:
        cluster.close()
