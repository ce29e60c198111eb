"""Responses framed from pre-serialized bytes must be the messages protobuf itself would make."""

from __future__ import annotations

from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2
from hypothesis import given, settings
from hypothesis import strategies as st
from snapshots import assignment

from xdsfleet.cache import typeurls, wire
from xdsfleet.cache.resources import encode


def test_sotw_response_bytes_parse_as_the_discovery_response() -> None:
    resources = [encode(typeurls.ENDPOINT, n, assignment(n, "10.0.0.1")) for n in ("a", "b")]
    data = wire.sotw_response(
        version_info="v1",
        type_url=typeurls.ENDPOINT,
        nonce="7",
        entries=[r.sotw_entry for r in resources],
    )
    parsed = discovery_pb2.DiscoveryResponse.FromString(data)
    expected = discovery_pb2.DiscoveryResponse(
        version_info="v1", type_url=typeurls.ENDPOINT, nonce="7"
    )
    for name in ("a", "b"):
        expected.resources.add().Pack(assignment(name, "10.0.0.1"))
    assert parsed == expected


def test_delta_response_bytes_parse_as_the_delta_discovery_response() -> None:
    res = encode(typeurls.ENDPOINT, "a", assignment("a", "10.0.0.1"))
    data = wire.delta_response(
        system_version_info="v2",
        type_url=typeurls.ENDPOINT,
        nonce="8",
        entries=[res.delta_entry],
        removed=["gone"],
    )
    parsed = discovery_pb2.DeltaDiscoveryResponse.FromString(data)
    assert parsed.system_version_info == "v2"
    assert parsed.nonce == "8"
    assert list(parsed.removed_resources) == ["gone"]
    [resource] = parsed.resources
    assert (resource.name, resource.version) == ("a", res.version)
    unpacked = type(assignment("a"))()
    assert resource.resource.Unpack(unpacked)
    assert unpacked == assignment("a", "10.0.0.1")


def test_large_resources_get_multi_byte_lengths() -> None:
    addresses = [f"10.0.{i // 250}.{i % 250}" for i in range(2000)]
    res = encode(typeurls.ENDPOINT, "big", assignment("big", *addresses))
    data = wire.sotw_response(
        version_info="v", type_url=typeurls.ENDPOINT, nonce="1", entries=[res.sotw_entry]
    )
    parsed = discovery_pb2.DiscoveryResponse.FromString(data)
    assert len(parsed.resources[0].value) == len(res.body) > 16384


def test_versions_are_content_hashes() -> None:
    first = encode(typeurls.ENDPOINT, "a", assignment("a", "10.0.0.1"))
    again = encode(typeurls.ENDPOINT, "a", assignment("a", "10.0.0.1"))
    other = encode(typeurls.ENDPOINT, "a", assignment("a", "10.0.0.2"))
    assert first.version == again.version != other.version


def test_entries_are_the_deterministic_serializations_of_their_fields() -> None:
    # Byte for byte, not only equal once parsed: versions and the protocol machines' size
    # accounting rely on these bytes being what protobuf itself would send.
    for addresses in (("10.0.0.1",), tuple(f"10.0.{i // 250}.{i % 250}" for i in range(2000))):
        message = assignment("a", *addresses)
        res = encode(typeurls.ENDPOINT, "a", message)
        packed = any_pb2.Any()
        packed.Pack(message, deterministic=True)
        sotw = discovery_pb2.DiscoveryResponse(resources=[packed])
        assert res.sotw_entry == sotw.SerializeToString(deterministic=True)
        resource = discovery_pb2.Resource(name="a", version=res.version, resource=packed)
        delta = discovery_pb2.DeltaDiscoveryResponse(resources=[resource])
        assert res.delta_entry == delta.SerializeToString(deterministic=True)


@settings(max_examples=30, deadline=None)
@given(
    responses=st.lists(
        st.tuples(
            st.booleans(),  # Delta
            st.text(max_size=20),  # version, empty ones included
            st.sampled_from(typeurls.ORDER),
            st.integers(0, 10**12),
        ),
        min_size=300,  # more versions than are kept framed: they are forgotten and framed anew
        max_size=400,
    )
)
def test_framed_fields_kept_across_responses_are_the_fields_protobuf_writes(
    responses: list[tuple[bool, str, str, int]],
) -> None:
    for delta, version, type_url, nonce in responses:
        if delta:
            data = wire.delta_response(
                system_version_info=version,
                type_url=type_url,
                nonce=str(nonce),
                entries=[],
                removed=[],
            )
            assert data == discovery_pb2.DeltaDiscoveryResponse(
                system_version_info=version, type_url=type_url, nonce=str(nonce)
            ).SerializeToString(deterministic=True)
        else:
            data = wire.sotw_response(
                version_info=version, type_url=type_url, nonce=str(nonce), entries=[]
            )
            assert data == discovery_pb2.DiscoveryResponse(
                version_info=version, type_url=type_url, nonce=str(nonce)
            ).SerializeToString(deterministic=True)
