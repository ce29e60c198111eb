"""File and Kubernetes sources aggregated into one fleet state: members registered by kubeconfig
or by Secret, added and removed at runtime, and the fleet cluster's objects."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from kube_api import ApiEmulator
from kube_helpers import FAST, endpoint_slice, no_threads_left, service, service_export
from states import AT_GATEWAY, NS
from structlog.testing import capture_logs
from waiting import eventually

from harness.certs import certificate
from xdsfleet.cache import typeurls
from xdsfleet.model.attachment import GATEWAY_GROUP
from xdsfleet.model.fleet import FleetState, GrantFrom, Member, MemberState, Namespace
from xdsfleet.pipeline.aggregate import Aggregator
from xdsfleet.sources.kube import resources
from xdsfleet.sources.kube.client import Access
from xdsfleet.translate import translate

__all__ = ["no_threads_left"]

NAMESPACE = "xdsfleet-system"
ROUTE = {
    "metadata": {"name": "shop", "namespace": "default", "generation": 1},
    "spec": {
        "parentRefs": [{"name": "gw"}],
        "rules": [{"backendRefs": [{"name": "shop", "port": 80}]}],
    },
}


def member_secret(secret: str, kubeconfig: str, **annotations: str) -> dict[str, object]:
    """A labelled member Secret; `annotations` are `xdsfleet.io/` annotations (`_` for `-`)."""
    return {
        "metadata": {
            "name": secret,
            "namespace": NAMESPACE,
            "labels": {"xdsfleet.io/member": "true"},
            "annotations": {
                f"xdsfleet.io/{k.replace('_', '-')}": v for k, v in annotations.items()
            },
        },
        "type": "Opaque",
        "data": {"kubeconfig": base64.b64encode(kubeconfig.encode()).decode()},
    }


def run_shop(api: ApiEmulator, *addresses: str) -> None:
    api.apply(resources.SERVICES, service("shop"))
    api.apply(resources.SERVICE_EXPORTS, service_export("shop"))
    api.apply(resources.ENDPOINT_SLICES, endpoint_slice("shop", *addresses))


@pytest.fixture
def fleet_api() -> Iterator[ApiEmulator]:
    with ApiEmulator() as emulator:
        yield emulator


@pytest.fixture
def east() -> Iterator[ApiEmulator]:
    with ApiEmulator() as emulator:
        run_shop(emulator, "10.1.0.1", "10.1.0.2")
        yield emulator


class Fleet:
    def __init__(self) -> None:
        self.states: list[FleetState] = []
        self.crashes: list[BaseException] = []
        self.aggregator = Aggregator(
            on_state=self.states.append,
            on_crash=self.crashes.append,
            settings=FAST,
            namespace=NAMESPACE,
        )

    async def start(
        self, state: FleetState, fleet_cluster: ApiEmulator | None = None
    ) -> FleetState:
        """Set the Fleet's state (and fleet cluster), and wait for the first complete state."""
        access = Access(kubeconfig_text=fleet_cluster.kubeconfig_text()) if fleet_cluster else None
        self.aggregator.set_base(state, fleet_cluster=access)
        return await asyncio.wait_for(self.aggregator.wait_ready(member_seconds=5), 10)

    @property
    def state(self) -> FleetState:
        assert self.aggregator.state is not None
        return self.aggregator.state

    def member(self, name: str) -> MemberState | None:
        return next((m for m in self.state.members if m.member.name == name), None)

    def addresses(self, name: str) -> set[str]:
        member = self.member(name)
        if member is None:
            return set()
        return {a for s in member.endpoint_slices for e in s.endpoints for a in e.addresses}


@pytest.fixture
async def fleet(fleet_api: ApiEmulator, east: ApiEmulator) -> AsyncIterator[Fleet]:
    """Set up after the emulators, so torn down before them: watches that outlive their API
    server would keep connecting to it while it stops."""
    found = Fleet()
    yield found
    await found.aggregator.stop()
    assert not found.crashes


def base(*members: Member) -> FleetState:
    return FleetState(name="test", members=tuple(MemberState(m) for m in members))


async def test_members_by_kubeconfig_and_by_file_join_one_state(
    fleet: Fleet, east: ApiEmulator, tmp_path: Path
) -> None:
    kubeconfig = str(east.kubeconfig(tmp_path / "east.kubeconfig"))
    on_disk = MemberState(Member("disk", "eu", "eu-1", manifests="/members/disk"))
    by_kubeconfig = Member("east", "eu", "eu-1a", kubeconfig=kubeconfig, context="emulator")
    state = await fleet.start(
        FleetState(name="test", members=(on_disk, MemberState(by_kubeconfig)))
    )
    assert [m.member.name for m in state.members] == ["disk", "east"]
    assert state.members[0] is on_disk
    assert fleet.addresses("east") == {"10.1.0.1", "10.1.0.2"}
    # A change in the member reaches the fleet state.
    east.apply(
        resources.ENDPOINT_SLICES, endpoint_slice("shop", "10.1.0.1", "10.1.0.2", "10.1.0.3")
    )
    await eventually(lambda: fleet.addresses("east") == {"10.1.0.1", "10.1.0.2", "10.1.0.3"})
    assert fleet.states[-1] is fleet.state
    # What did not change is the very same object: translation memos hold on identity.
    assert fleet.state.members[0] is on_disk


async def test_a_member_secret_added_at_runtime_becomes_a_member_and_goes_with_it(
    fleet: Fleet, fleet_api: ApiEmulator, east: ApiEmulator
) -> None:
    state = await fleet.start(base(), fleet_api)
    assert state.members == ()
    secret = member_secret(
        "east-cluster", east.kubeconfig_text(), name="east", region="eu", zone="eu-1a", weight="3"
    )
    with capture_logs() as logs:
        fleet_api.apply(resources.SECRETS, secret)
        await eventually(lambda: fleet.addresses("east") == {"10.1.0.1", "10.1.0.2"})
    member = fleet.member("east")
    assert member is not None
    assert (member.member.region, member.member.weight, member.member.secret) == (
        "eu",
        3,
        "east-cluster",
    )
    assert any(e["event"] == "member_added" for e in logs)
    fleet_api.delete(resources.SECRETS, "east-cluster", NAMESPACE)
    await eventually(lambda: fleet.member("east") is None)


async def test_a_secret_that_loses_its_member_label_stops_being_a_member(
    fleet: Fleet, fleet_api: ApiEmulator, east: ApiEmulator
) -> None:
    await fleet.start(base(), fleet_api)
    secret = member_secret("east", east.kubeconfig_text(), region="eu", zone="eu-1a")
    fleet_api.apply(resources.SECRETS, secret)
    await eventually(lambda: fleet.member("east") is not None)
    # The label selector's watch sees it leave: DELETED, as a real API server says it.
    del secret["metadata"]["labels"]  # type: ignore[attr-defined]
    fleet_api.apply(resources.SECRETS, secret)
    await eventually(lambda: fleet.member("east") is None)


async def test_an_unlabelled_secret_is_never_read(
    fleet: Fleet, fleet_api: ApiEmulator, east: ApiEmulator
) -> None:
    await fleet.start(base(), fleet_api)
    secret = member_secret("east", east.kubeconfig_text(), region="eu", zone="eu-1a")
    secret["metadata"]["labels"] = {}  # type: ignore[index]
    fleet_api.apply(resources.SECRETS, secret)
    fleet_api.apply(
        resources.SECRETS, member_secret("ok", east.kubeconfig_text(), region="eu", zone="z")
    )
    await eventually(lambda: fleet.member("ok") is not None)
    assert fleet.member("east") is None
    # Labelled Secrets of the server's namespace; elsewhere, only TLS Secrets.
    assert all(
        (
            r.query.get("labelSelector") == "xdsfleet.io/member"
            and f"/namespaces/{NAMESPACE}/" in r.path
        )
        or r.query.get("fieldSelector") == "type=kubernetes.io/tls"
        for r in fleet_api.requests
        if "/secrets" in r.path
    )


async def test_a_secret_with_bad_annotations_is_reported_by_annotation(
    fleet: Fleet, fleet_api: ApiEmulator, east: ApiEmulator
) -> None:
    await fleet.start(base(), fleet_api)
    with capture_logs() as logs:
        fleet_api.apply(
            resources.SECRETS, member_secret("east", east.kubeconfig_text(), zone="z", weight="x")
        )
        await eventually(lambda: any(e["event"] == "source_problem" for e in logs))
    [problem] = [e for e in logs if e["event"] == "source_problem"]
    assert (
        'metadata.annotations["xdsfleet.io/region"]: missing required field' in problem["problem"]
    )
    assert 'metadata.annotations["xdsfleet.io/weight"]: expected an integer' in problem["problem"]
    assert fleet.member("east") is None


async def test_a_fleet_member_borrows_the_kubeconfig_of_the_secret_it_names(
    fleet: Fleet, fleet_api: ApiEmulator, east: ApiEmulator
) -> None:
    fleet_api.apply(resources.SECRETS, member_secret("east-kubeconfig", east.kubeconfig_text()))
    named = Member("east", "eu", "eu-1a", secret="east-kubeconfig")
    state = await fleet.start(base(named), fleet_api)
    # The Secret has no annotations: it is no member of its own, only east's kubeconfig.
    assert [m.member.name for m in state.members] == ["east"]
    assert fleet.addresses("east") == {"10.1.0.1", "10.1.0.2"}


async def test_the_fleet_can_be_a_resource_of_the_fleet_cluster(
    fleet: Fleet, fleet_api: ApiEmulator, east: ApiEmulator
) -> None:
    fleet_api.apply(resources.SECRETS, member_secret("east-kubeconfig", east.kubeconfig_text()))
    fleet_api.apply(
        resources.FLEETS,
        {
            "metadata": {"name": "prod"},
            "spec": {
                "exportAll": True,
                "members": [
                    {
                        "name": "east",
                        "region": "eu",
                        "zone": "eu-1a",
                        "source": {"secret": "east-kubeconfig"},
                    }
                ],
            },
            "status": {"members": []},
        },
    )
    fleet_api.apply(resources.HTTP_ROUTES, ROUTE)
    fleet.aggregator.use_fleet_resource("prod", Access(kubeconfig_text=fleet_api.kubeconfig_text()))
    state = await asyncio.wait_for(fleet.aggregator.wait_ready(member_seconds=5), 10)
    assert (state.name, state.export_all) == ("prod", True)
    assert fleet.addresses("east") == {"10.1.0.1", "10.1.0.2"}
    assert [r.name for r in state.http_routes] == ["shop"]


async def test_the_server_starts_while_a_member_is_unreachable(
    fleet: Fleet, east: ApiEmulator, tmp_path: Path
) -> None:
    with ApiEmulator() as down:
        down.go_down()
        members = (
            Member("east", "eu", "a", kubeconfig=str(east.kubeconfig(tmp_path / "east"))),
            Member("west", "eu", "b", kubeconfig=str(down.kubeconfig(tmp_path / "west"))),
        )
        state = await fleet.start(base(*members))
        west = fleet.member("west")
        assert west is not None
        assert west.stale
        assert fleet.addresses("east") == {"10.1.0.1", "10.1.0.2"}
        assert [r.name for r in fleet.aggregator.reports() if r.stale] == ["west"]
        down.come_back()
        await eventually(lambda: not fleet.member("west").stale)  # type: ignore[union-attr]
        assert state.members[0] is fleet.state.members[0]  # east untouched: the same object


async def test_a_bad_kubeconfig_leaves_the_member_stale_and_reported(
    fleet: Fleet, tmp_path: Path
) -> None:
    broken = Member("east", "eu", "a", kubeconfig=str(tmp_path / "missing.kubeconfig"))
    with capture_logs() as logs:
        await fleet.start(base(broken))
    member = fleet.member("east")
    assert member is not None
    assert member.stale
    assert any(e["event"] == "source_problem" and e["subject"] == "east" for e in logs)


async def test_routes_of_the_fleet_cluster_join_the_files_and_a_refused_update_keeps_the_last_good(
    fleet: Fleet, fleet_api: ApiEmulator
) -> None:
    fleet_api.apply(resources.HTTP_ROUTES, ROUTE)
    state = await fleet.start(base(), fleet_api)
    [route] = state.http_routes
    assert route.rules[0].backend_refs[0].port == 80
    bad = {**ROUTE, "spec": {**ROUTE["spec"], "bogus": True}}
    with capture_logs() as logs:
        fleet_api.apply(resources.HTTP_ROUTES, bad)
        await eventually(lambda: any(e["event"] == "object_rejected" for e in logs))
    assert "fleet cluster: HTTPRoute default/shop: spec.bogus: unknown field" in str(logs)
    assert fleet.state.http_routes == (route,)
    mirror = fleet.aggregator.fleet_cluster.mirror(resources.HTTP_ROUTES)  # type: ignore[union-attr]
    assert ("default", "shop") in mirror.refused


async def test_an_ingress_of_the_fleet_cluster_is_served_as_an_http_route(
    fleet: Fleet, fleet_api: ApiEmulator
) -> None:
    gateway = {
        "metadata": {"name": "gw", "namespace": "default"},
        "spec": {
            "gatewayClassName": "xdsfleet",
            "listeners": [{"name": "http", "port": 10080, "protocol": "HTTP"}],
        },
    }
    path = {
        "path": "/",
        "pathType": "Prefix",
        "backend": {"service": {"name": "shop", "port": {"number": 80}}},
    }
    legacy = {
        "metadata": {"name": "legacy", "namespace": "default"},
        "spec": {"ingressClassName": "xdsfleet", "rules": [{"http": {"paths": [path]}}]},
    }
    fleet_api.apply(resources.GATEWAYS, gateway)
    fleet_api.apply(resources.INGRESSES, legacy)
    state = await fleet.start(base(), fleet_api)
    [route] = state.http_routes
    assert (route.name, route.parent_refs[0].name) == ("legacy", "gw")
    fleet_api.delete(resources.INGRESSES, "legacy")
    await eventually(lambda: fleet.state.http_routes == ())


async def test_a_forbidden_fleet_resource_is_named_and_keeps_the_server_unready(
    fleet: Fleet, fleet_api: ApiEmulator
) -> None:
    fleet_api.forbid(resources.GRPC_ROUTES)  # a Role that lacks GRPCRoutes
    with capture_logs() as logs:
        fleet.aggregator.set_base(
            base(), fleet_cluster=Access(kubeconfig_text=fleet_api.kubeconfig_text())
        )
        await eventually(lambda: any(e["event"] == "fleet_resource_forbidden" for e in logs))
    [said] = [e for e in logs if e["event"] == "fleet_resource_forbidden"]
    assert said["resource"] == "grpcroutes"
    assert 'cannot list resource "grpcroutes"' in said["error"]
    assert fleet.aggregator.fleet_cluster is not None
    assert not fleet.aggregator.fleet_cluster.synced.is_set()
    fleet_api.forbid(resources.GRPC_ROUTES, False)
    await asyncio.wait_for(fleet.aggregator.wait_ready(member_seconds=5), 10)


async def test_reference_grants_and_namespace_labels_of_the_fleet_cluster_join_the_state(
    fleet: Fleet, fleet_api: ApiEmulator
) -> None:
    grant = {
        "metadata": {"name": "from-infra", "namespace": "web"},
        "spec": {
            "from": [{"group": GATEWAY_GROUP, "kind": "HTTPRoute", "namespace": "infra"}],
            "to": [{"group": "", "kind": "Service"}],
        },
    }
    fleet_api.apply(resources.REFERENCE_GRANTS, grant)
    # Namespaces carry status and fields the model does not read: only the labels are kept.
    blue = {
        "metadata": {"name": "blue", "labels": {"team": "blue"}, "uid": "1"},
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"},
    }
    fleet_api.apply(resources.NAMESPACES, blue)
    state = await fleet.start(base(), fleet_api)

    [found] = state.reference_grants
    assert found.permits(GrantFrom(GATEWAY_GROUP, "HTTPRoute", "infra"), "", "Service", "web-1")
    assert state.namespaces == (Namespace("blue", (("team", "blue"),)),)
    fleet_api.delete(resources.REFERENCE_GRANTS, "from-infra", namespace="web")
    await eventually(lambda: fleet.state.reference_grants == ())


def tls_secret(name: str, namespace: str, certificate: str, key: str) -> dict[str, object]:
    """A TLS Secret as cert-manager writes it (with `ca.crt`, and a key of another reader)."""
    data = {"tls.crt": certificate, "tls.key": key, "ca.crt": certificate, "key.der": "AA=="}
    return {
        "metadata": {"name": name, "namespace": namespace},
        "type": "kubernetes.io/tls",
        "data": {
            k: v if k == "key.der" else base64.b64encode(v.encode()).decode()
            for k, v in data.items()
        },
    }


HTTPS_GATEWAY = {
    "metadata": {"name": "gw", "namespace": NS},
    "spec": {
        "gatewayClassName": "xdsfleet",
        "listeners": [
            {
                "name": "https",
                "port": 8443,
                "protocol": "HTTPS",
                "hostname": "shop.example.com",
                "tls": {"certificateRefs": [{"name": "shop-tls", "namespace": "certs"}]},
            }
        ],
    },
}


def served_certificate(state: FleetState) -> str | None:
    """The certificate chain the gateway's SDS secret carries, None when none is served."""
    secret = translate(state, AT_GATEWAY)[typeurls.SECRET].get("certs/shop-tls")
    return None if secret is None else str(secret.tls_certificate.certificate_chain.inline_string)


async def test_a_tls_secret_of_the_fleet_cluster_is_served_rotated_and_removed(
    fleet: Fleet, fleet_api: ApiEmulator
) -> None:
    first, first_key = certificate(("shop.example.com",))
    fleet_api.apply(resources.GATEWAYS, HTTPS_GATEWAY)
    fleet_api.apply(resources.SECRETS, tls_secret("shop-tls", "certs", first, first_key))
    # Another namespace's Secret: the Gateway's namespace needs a ReferenceGrant, as for a file.
    state = await fleet.start(base(), fleet_api)
    assert [(s.namespace, s.name) for s in state.secrets] == [("certs", "shop-tls")]
    assert served_certificate(state) is None
    grant = {
        "metadata": {"name": "gateways", "namespace": "certs"},
        "spec": {
            "from": [{"group": GATEWAY_GROUP, "kind": "Gateway", "namespace": NS}],
            "to": [{"group": "", "kind": "Secret"}],
        },
    }
    fleet_api.apply(resources.REFERENCE_GRANTS, grant)
    await eventually(lambda: served_certificate(fleet.state) == first)

    # cert-manager renews: the Secret is updated in place.
    second, second_key = certificate(("shop.example.com",))
    fleet_api.apply(resources.SECRETS, tls_secret("shop-tls", "certs", second, second_key))
    await eventually(lambda: served_certificate(fleet.state) == second)

    # A key that does not match: Envoy would reject it, so the last good one keeps serving.
    with capture_logs() as logs:
        fleet_api.apply(resources.SECRETS, tls_secret("shop-tls", "certs", first, second_key))
        await eventually(lambda: any(e["event"] == "object_rejected" for e in logs))
    [rejected] = [e for e in logs if e["event"] == "object_rejected"]
    assert any("KEY_VALUES_MISMATCH" in p for p in rejected["problems"])
    assert "PRIVATE KEY" not in str(logs)
    assert served_certificate(fleet.state) == second

    fleet_api.delete(resources.SECRETS, "shop-tls", namespace="certs")
    await eventually(lambda: fleet.state.secrets == ())
    assert served_certificate(fleet.state) is None


async def test_only_tls_secrets_are_read_from_the_fleet_cluster(
    fleet: Fleet, fleet_api: ApiEmulator
) -> None:
    password = {
        "metadata": {"name": "db", "namespace": NS},
        "type": "Opaque",
        "data": {"password": base64.b64encode(b"hunter2").decode()},
    }
    fleet_api.apply(resources.SECRETS, password)
    with capture_logs() as logs:
        state = await fleet.start(base(), fleet_api)
    # Read, it would have been refused (and logged) as a Secret of the wrong type.
    assert state.secrets == ()
    assert not [e for e in logs if e["event"] == "object_rejected"]
