"""SDS over ADS: certificates are a resource type like the others, over SotW and Delta alike.

The protocol machines know types only through `cache.typeurls.ORDER`; these tests show that the
Secret type added there is served, ordered before listeners, and pushed again on rotation.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from snapshots import delta_request, request
from test_ads_server import Fixture, read, start, with_node

from xdsfleet.cache import typeurls
from xdsfleet.cache.resources import Encoder
from xdsfleet.cache.snapshot import Snapshot, build_snapshot
from xdsfleet.model.fleet import (
    FleetState,
    Gateway,
    GatewayListener,
    Member,
    MemberState,
    SecretRef,
    TLSSecret,
)
from xdsfleet.model.node import NodeProfile
from xdsfleet.translate import translate

SECRET = "infra/edge-tls"


def fleet_snapshot(certificate: str, port: int = 443) -> Snapshot:
    """A gateway with one HTTPS listener on `port` and its certificate `certificate`."""
    certificates = (SecretRef("infra", "edge-tls"),)
    listener = GatewayListener("https", port, "HTTPS", certificate_refs=certificates)
    state = FleetState(
        "f",
        (MemberState(Member("a", "r", "z")),),
        gateways=(Gateway("infra", "edge", "xdsfleet", (listener,)),),
        secrets=(TLSSecret("infra", "edge-tls", certificate, "KEY"),),
    )
    return build_snapshot(translate(state, NodeProfile(gateway="infra/edge")), Encoder())


def certificate_of(packed: Any) -> str:
    """The certificate in a packed Secret."""
    secret = secret_pb2.Secret()
    assert packed.Unpack(secret)
    return str(secret.tls_certificate.certificate_chain.inline_string)


@pytest.fixture
async def ads() -> AsyncIterator[Fixture]:
    fixture, server = await start(fleet_snapshot("FIRST"))
    try:
        yield fixture
    finally:
        await server.stop(0)


async def test_sotw_serves_a_requested_secret_and_pushes_its_rotation(ads: Fixture) -> None:
    call = ads.stub().StreamAggregatedResources()
    await call.write(with_node(request(typeurls.SECRET, [SECRET]), role="gateway"))
    first = await read(call)
    assert first.type_url == typeurls.SECRET
    assert [certificate_of(r) for r in first.resources] == ["FIRST"]
    await call.write(
        request(typeurls.SECRET, [SECRET], nonce=first.nonce, version=first.version_info)
    )

    ads.publish(fleet_snapshot("SECOND"))

    rotated = await read(call)
    assert rotated.type_url == typeurls.SECRET
    assert [certificate_of(r) for r in rotated.resources] == ["SECOND"]
    call.cancel()


async def test_delta_serves_a_subscribed_secret_and_pushes_its_rotation(ads: Fixture) -> None:
    call = ads.stub().DeltaAggregatedResources()
    await call.write(with_node(delta_request(typeurls.SECRET, [SECRET]), role="gateway"))
    first = await read(call)
    assert [r.name for r in first.resources] == [SECRET]
    await call.write(delta_request(typeurls.SECRET, nonce=first.nonce))

    ads.publish(fleet_snapshot("SECOND"))

    rotated = await read(call)
    assert [certificate_of(r.resource) for r in rotated.resources] == ["SECOND"]
    assert rotated.resources[0].version != first.resources[0].version
    call.cancel()


async def test_a_new_secret_reaches_the_client_before_the_listener_that_uses_it(
    ads: Fixture,
) -> None:
    call = ads.stub().StreamAggregatedResources()
    await call.write(with_node(request(typeurls.LISTENER), role="gateway"))
    listeners = await read(call)
    await call.write(
        request(typeurls.LISTENER, nonce=listeners.nonce, version=listeners.version_info)
    )
    await call.write(request(typeurls.SECRET, [SECRET]))
    secrets = await read(call)
    await call.write(
        request(typeurls.SECRET, [SECRET], nonce=secrets.nonce, version=secrets.version_info)
    )

    ads.publish(fleet_snapshot("SECOND", port=8443))

    assert [(await read(call)).type_url for _ in range(2)] == [typeurls.SECRET, typeurls.LISTENER]
    call.cancel()


def test_secrets_come_before_listeners_in_the_serving_order() -> None:
    # Envoy warms a listener until the certificates it names arrive (xds-protocol rule 13).
    assert typeurls.ORDER.index(typeurls.SECRET) < typeurls.ORDER.index(typeurls.LISTENER)
