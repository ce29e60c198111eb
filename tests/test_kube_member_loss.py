"""A member lost through Kubernetes, from outside: a real `xdsfleet serve` reading emulated API
servers, raw gRPC gateway streams ACKing like Envoy, and every EndpointSlice of one member
deleted through its API server (one watch event each), then created again.

This is `python -m benchmarks kubeloss` at a size that fits `make test`. Only outcomes are
asserted: no stream is cut, every stream ends on an EDS state without the member's endpoints,
and then on one with all of them again. The benchmark reports the timings.
"""

from __future__ import annotations

from benchmarks.fleet import Shape
from benchmarks.measures import kubeloss

STREAMS = 24


def test_a_member_deleted_and_created_again_cuts_no_stream_and_every_one_follows() -> None:
    options = kubeloss.Options(shape=Shape(members=3, services=10, endpoints=300), streams=STREAMS)
    section = kubeloss.measure(options)
    assert section.data["streams_cut"] == 0
    # Each stream ACKed a state holding none of the member's endpoints, then all of them.
    assert len(section.data["loss_acked"]) == STREAMS
    assert len(section.data["restore_acked"]) == STREAMS
    assert section.data["loss_publishes"] >= 1
