"""Memoisation: unchanged inputs give back the very same message objects, and a change rebuilds
only the resources that depend on it (the cache skips re-encoding by object identity)."""

from __future__ import annotations

import dataclasses
import weakref
from collections.abc import Iterator

import pytest

from xdsfleet.cache import typeurls
from xdsfleet.model.fleet import (
    AllowedRoutes,
    BackendRef,
    Endpoint,
    EndpointPort,
    EndpointSlice,
    FleetState,
    Gateway,
    GatewayListener,
    GrantFrom,
    GrantTo,
    HTTPRoute,
    Member,
    MemberState,
    ParentRef,
    PathMatch,
    ReferenceGrant,
    RouteMatch,
    RouteNamespaces,
    RouteRule,
    SecretRef,
    Service,
    ServicePort,
    TLSSecret,
)
from xdsfleet.model.node import NodeProfile, Role
from xdsfleet.model.policy import (
    Http3,
    MemberPolicy,
    Pin,
    PolicySpec,
    PolicyTarget,
    Retry,
    TargetKind,
    TrafficPolicy,
)
from xdsfleet.translate import translate
from xdsfleet.translate.memo import Memo, cached, memoised
from xdsfleet.translate.services import ServicePortKey, service_index


@pytest.fixture(autouse=True)
def memo() -> Iterator[Memo]:
    """One memo per test, current for all its translations, as a publisher's is."""
    with Memo().active() as current:
        yield current


def slice_of(service: str, *addresses: str) -> EndpointSlice:
    return EndpointSlice(
        "ns",
        f"{service}-1",
        service,
        (EndpointPort("http", 8080),),
        tuple(Endpoint((a,)) for a in addresses),
    )


def running(member: Member, *slices: EndpointSlice) -> MemberState:
    names = [s.service_name for s in slices]
    return MemberState(
        member,
        services=tuple(Service("ns", n, (ServicePort("http", 80),)) for n in names),
        endpoint_slices=slices,
        exports=tuple(("ns", n) for n in names),
    )


EAST = Member("east", "r-east", "z-east")
WEST = Member("west", "r-west", "z-west")
ANY_NAMESPACE = AllowedRoutes(RouteNamespaces.ALL)
# The Gateway (in infra) uses a certificate of namespace ns.
CERTIFICATES_FOR_THE_GATEWAY = ReferenceGrant(
    "ns",
    "certificates",
    (GrantFrom("gateway.networking.k8s.io", "Gateway", "infra"),),
    (GrantTo("", "Secret"),),
)
TLS = GatewayListener(
    "c",
    443,
    "HTTPS",
    certificate_refs=(SecretRef("ns", "edge-tls"),),
    allowed_routes=ANY_NAMESPACE,
)
GATEWAY = Gateway(
    "infra",
    "edge",
    "xdsfleet",
    (
        GatewayListener("a", 80, allowed_routes=ANY_NAMESPACE),
        GatewayListener("b", 81, allowed_routes=ANY_NAMESPACE),
        TLS,
    ),
)
# Policies of every level, so that memoisation is checked through them too.
POLICIES = (
    TrafficPolicy(
        "ns",
        "web",
        (PolicyTarget(TargetKind.SERVICE, "web"),),
        PolicySpec(members=(MemberPolicy("west", weight=3),), retry=Retry(attempts=3)),
    ),
    TrafficPolicy(
        "ns",
        "canary",
        (PolicyTarget(TargetKind.HTTP_ROUTE, "web"),),
        PolicySpec(pin=Pin(("east",))),
    ),
    TrafficPolicy(
        "infra", "h3", (PolicyTarget(TargetKind.GATEWAY, "edge", "c"),), PolicySpec(http3=Http3())
    ),
)


def route_to(service: str, *listeners: str, path: str = "/") -> HTTPRoute:
    return HTTPRoute(
        "ns",
        service,
        tuple(ParentRef("infra", "edge", listener) for listener in listeners),
        (),
        (RouteRule((RouteMatch(PathMatch(value=path)),), (BackendRef(service, "ns", 80),)),),
    )


def fleet(web: tuple[str, ...] = ("10.0.0.1",), *, web_path: str = "/") -> FleetState:
    """Two members running `web` and `api`; `web` in east has the given endpoints."""
    return FleetState(
        "f",
        (
            running(EAST, slice_of("api", "10.0.0.9"), slice_of("web", *web)),
            running(WEST, slice_of("api", "10.1.0.9"), slice_of("web", "10.1.0.1")),
        ),
        gateways=(GATEWAY,),
        http_routes=(route_to("api", "a"), route_to("web", "b", "c", path=web_path)),
        policies=POLICIES,
        secrets=(TLSSecret("ns", "edge-tls", "CERTIFICATE", "KEY"),),
        reference_grants=(CERTIFICATES_FOR_THE_GATEWAY,),
    )


SIDECAR = NodeProfile(role=Role.SIDECAR, region="r-east")
GATEWAY_PROFILE = NodeProfile(role=Role.GATEWAY, gateway="infra/edge", region="r-east")


def same_objects(before: dict[str, object], after: dict[str, object]) -> set[str]:
    return {name for name in before if after.get(name) is before[name]}


def test_translating_the_same_state_again_gives_back_the_same_objects() -> None:
    state = fleet()

    first, second = translate(state, SIDECAR), translate(state, SIDECAR)

    for type_url in typeurls.ORDER:
        assert same_objects(first[type_url], second[type_url]) == set(first[type_url])


def test_an_equal_state_built_anew_gives_back_the_same_objects() -> None:
    first, second = translate(fleet(), GATEWAY_PROFILE), translate(fleet(), GATEWAY_PROFILE)

    for type_url in typeurls.ORDER:
        assert first[type_url]
        assert same_objects(first[type_url], second[type_url]) == set(first[type_url])


def test_an_endpoint_change_rebuilds_only_that_services_assignment() -> None:
    before = translate(fleet(), SIDECAR)

    after = translate(fleet(web=("10.0.0.1", "10.0.0.2")), SIDECAR)

    # A rebuilt message would be a new object: identity shows what was not rebuilt.
    assert same_objects(before[typeurls.ENDPOINT], after[typeurls.ENDPOINT]) == {"ns/api:80"}
    assert same_objects(before[typeurls.CLUSTER], after[typeurls.CLUSTER]) == {
        "ns/api:80",
        "ns/web:80",
    }


def test_a_member_state_shared_between_generations_is_not_walked_again() -> None:
    state = fleet()
    east, west = state.members
    changed_west = dataclasses.replace(west, endpoint_slices=(slice_of("api", "10.1.0.8"),))

    before = service_index(state)
    after = service_index(dataclasses.replace(state, members=(east, changed_west)))

    key = ServicePortKey("ns", "web", 80)
    assert after[key].members[0] is before[key].members[0]  # east's contribution, reused as is
    # West's, walked again: its web slice is gone.
    assert after[key].members[1] != before[key].members[1]


def test_profiles_with_the_same_tiers_share_assignments() -> None:
    state = fleet()
    far = translate(state, NodeProfile(role=Role.SIDECAR, region="r-north"))
    farther = translate(state, NodeProfile(role=Role.PROXYLESS, region="r-south", zone="z-9"))

    assert same_objects(far[typeurls.ENDPOINT], farther[typeurls.ENDPOINT]) == set(
        far[typeurls.ENDPOINT]
    )


def test_profiles_in_different_places_get_different_assignments() -> None:
    state = fleet()
    east = translate(state, SIDECAR)
    west = translate(state, NodeProfile(role=Role.SIDECAR, region="r-west"))

    assert east[typeurls.ENDPOINT]["ns/web:80"] != west[typeurls.ENDPOINT]["ns/web:80"]


def test_a_route_change_rebuilds_only_the_route_configuration_it_attaches_to() -> None:
    before = translate(fleet(), GATEWAY_PROFILE)

    after = translate(fleet(web_path="/shop"), GATEWAY_PROFILE)

    assert same_objects(before[typeurls.ROUTE], after[typeurls.ROUTE]) == {"infra/edge:80"}
    for type_url in (typeurls.CLUSTER, typeurls.ENDPOINT, typeurls.LISTENER):
        assert same_objects(before[type_url], after[type_url]) == set(before[type_url])


def test_a_resource_unused_for_two_generations_is_forgotten() -> None:
    first = translate(fleet(), SIDECAR)[typeurls.ENDPOINT]["ns/web:80"]
    for addresses in (("10.0.0.2",), ("10.0.0.3",)):
        translate(fleet(web=addresses), SIDECAR)

    again = translate(fleet(), SIDECAR)[typeurls.ENDPOINT]["ns/web:80"]

    assert again is not first
    assert again == first


def test_a_resource_used_in_every_generation_is_kept() -> None:
    first = translate(fleet(), SIDECAR)[typeurls.ENDPOINT]["ns/api:80"]
    for addresses in (("10.0.0.2",), ("10.0.0.3",), ("10.0.0.4",)):
        again = translate(fleet(web=addresses), SIDECAR)[typeurls.ENDPOINT]["ns/api:80"]

        assert again is first


class _Built:
    """A result that can be watched for being freed."""


@memoised
def _build(key: str) -> _Built:
    return _Built()


def _two_generations_later(memo: Memo) -> None:
    for _ in range(2):
        memo.start_generation(object())
        _build("other")  # a table rotates when next used


def test_what_a_generation_drops_is_freed_by_its_owner_a_few_entries_at_a_time(
    memo: Memo,
) -> None:
    alive = weakref.ref(_build("dropped"))
    _two_generations_later(memo)

    # Forgotten (asked again, it is built anew) but not freed: the owner frees it in steps.
    assert alive() is not None
    assert _build("dropped") is not alive()
    steps = memo.releasing()
    assert next(steps, "done") is None  # one step at least: the caller may pause there
    for _ in steps:
        pass
    assert alive() is None


def test_what_no_owner_released_is_freed_when_the_next_generation_starts(memo: Memo) -> None:
    alive = weakref.ref(_build("dropped"))
    _two_generations_later(memo)

    memo.start_generation(object())

    assert alive() is None  # at most one generation's drop waits for `releasing`


def test_cached_finds_what_a_builder_gave_and_builds_nothing(memo: Memo) -> None:
    assert cached(_build, "asked") is None
    built = _build("asked")

    assert cached(_build, "asked") is built
    assert cached(_build, "never") is None
