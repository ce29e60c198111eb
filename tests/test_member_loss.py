"""A member lost and restored under churn, with streams connected: none is cut, and every one
ends on the latest version of everything it watches.

This is the churn benchmark's member-loss case (`python -m benchmarks churn`) at a size that
fits `make test`: the real Debouncer, the publisher translating in slices as `serve` runs it,
the ADS server, and gRPC clients in a process of their own (SotW and Delta, twelve profiles),
each ACKing what it is sent. Only outcomes are asserted; the benchmark reports the timings.
"""

from __future__ import annotations

from benchmarks.fleet import Shape
from benchmarks.measures import churn

CLIENTS = 96
SHAPE = Shape(members=10, services=60, endpoints=6_000)


async def test_a_member_lost_and_restored_cuts_no_stream_and_all_end_on_the_latest() -> None:
    options = churn.Options(
        clients=CLIENTS,
        shape=SHAPE,
        seconds=4.0,
        warmup=0.5,
        per_minute=0.5,  # 50 events per second: the loss and the restore land amid churn
        open_limit=48,
        floor=False,  # the benchmark's floor measures speed, which tests do not
    )
    section = await churn.measure(options)
    assert section.data["streams_cut"] == 0
    # Caught up: after the last state, every stream ACKed its profile's latest version of every
    # type it subscribes to (None: not within the measure's limit).
    assert section.data["drain_seconds"] is not None
    assert section.data["publishes"] > 2  # the loss and the restore were published, at least
    assert section.data["eds_converged"] > 0  # xdsfleet_convergence_seconds saw them through
