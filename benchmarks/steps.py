"""`python -m benchmarks.steps`: the steps that run on the event loop, without gRPC: a publish's
longest single steps, and what one ADS stream costs in memory and CPU per step.

The publisher runs a publish as a generator of small steps (`pipeline/publisher.py`), a slice of
them at a time between two looks at the loop: no single step may hold the loop longer than the
loop-lag target allows (issue 10: ~20 ms). This builds the first snapshots of the twelve
profiles of the generated fleet and of a proxyless client (as `Publisher.prepare` does), then
publishes a member lost and restored to the twelve profiles, each way as a patch (endpoints alone
changed) and as a full translation (the same change together with a namespace's labels), then a
member's weight edited (the service index derived again), and times every step (thread CPU;
the collector off, or with `--collector server` as `pipeline/collector.py` runs it: generation 0
passes automatic, no automatic generation 1 or full pass, survivors frozen after each publish):
it lists the longest, where each resumed and ended (the innermost `yield`), and how many took
over 20 ms.

The protocol machines (`server/sotw.py`, `server/delta.py`) run on the event loop that serves
every stream, and hold per-stream state for as long as the stream lives. This drives N machines
of each protocol as Envoy does (wildcard CDS, EDS for every cluster, wildcard LDS, RDS for the
routes the listeners name, an ACK for each response) against one profile's snapshots of the
generated fleet, then measures:

- memory per stream once synced (tracemalloc: what the machines allocated, divided by N; the
  snapshot is shared and not counted), and the objects per stream the cyclic collector tracks;
- CPU per stream for one endpoint moved (a steady change: one assignment changes, as in
  `python -m benchmarks convergence`), then for a member lost and then restored (every
  assignment changes): the machine's `next_responses`, the join of the response bytes
  (`server/ads.py`), and the ACK, read from its bytes as the server reads it (SotW:
  `server/requests.py`; Delta: protobuf, as gRPC's deserializer);
- a full collector pass with every stream synced, and again midway through a member loss's
  fan-out (every stream sent its response and not answered yet): what the per-stream state
  costs each gen-2 pass of the server's collector.

Collector passes are switched off while timing the steps, so those are the steps' own cost;
every figure is the thread's CPU time, so a busy machine does not inflate it.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2

from benchmarks.fleet import NAMESPACE, Fleet, Shape, profiles
from xdsfleet.cache import typeurls
from xdsfleet.cache.resources import Encoder
from xdsfleet.cache.snapshot import Snapshot, build_snapshot
from xdsfleet.model.fleet import FleetState, Namespace
from xdsfleet.model.node import NodeProfile, Role
from xdsfleet.pipeline.collector import Collector
from xdsfleet.pipeline.publisher import Publisher
from xdsfleet.server.ads import Limits, _delta_bytes, _sotw_bytes
from xdsfleet.server.delta import DeltaStream
from xdsfleet.server.protocol import Response
from xdsfleet.server.requests import Runs, SotwRequests, read_delta
from xdsfleet.server.sotw import SotwStream
from xdsfleet.translate import translate
from xdsfleet.translate.memo import Memo
from xdsfleet.translate.steps import Steps

NODE = base_pb2.Node(id="bench", cluster="bench")
# Issue 10: no callback of ours longer than ~20 ms on the loop.
LONG_STEP_SECONDS = 0.020
LOST_MEMBER = 3
PROXYLESS = NodeProfile(role=Role.PROXYLESS, region="eu-west", zone="eu-west-1a")
T = TypeVar("T")


def _delta_read(data: bytes) -> tuple[Any, bool]:
    return read_delta(discovery_pb2.DeltaDiscoveryRequest.FromString(data))


@dataclass
class _Client:
    """One simulated Envoy: a machine, how the server reads its requests' bytes, and what it
    must still ask for."""

    delta: bool
    machine: Any
    asked: set[str]
    read: Callable[[bytes], tuple[Any, bool]] = _delta_read

    @classmethod
    def of(cls, delta: bool, runs: Runs) -> _Client:
        """`runs`: shared by the streams, as the server shares them."""
        if delta:
            return cls(True, DeltaStream(), set())
        return cls(False, SotwStream(), set(), SotwRequests(runs, Limits().unread_names).read)

    def request(self, type_url: str, names: list[str], nonce: str = "", version: str = "") -> bytes:
        """The request's bytes, as Envoy writes them (the node on every request)."""
        if self.delta:
            subscribe = [] if type_url in self.asked else names
            message: Any = discovery_pb2.DeltaDiscoveryRequest(
                node=NODE,
                type_url=type_url,
                resource_names_subscribe=subscribe,
                response_nonce=nonce,
            )
        else:
            message = discovery_pb2.DiscoveryRequest(
                node=NODE,
                type_url=type_url,
                resource_names=names,
                response_nonce=nonce,
                version_info=version,
            )
        return bytes(message.SerializeToString())

    def send(self, data: bytes) -> None:
        """The server reads the request: decodes it, and the machine takes it."""
        request, same_names = self.read(data)
        self.machine.on_request(request, same_names)


def _names(snapshot: Snapshot, type_url: str) -> list[str]:
    if type_url in (typeurls.CLUSTER, typeurls.LISTENER):
        return []  # wildcard
    return sorted(snapshot.of(type_url))


def _sync(client: _Client, snapshot: Snapshot) -> None:
    for type_url in typeurls.ORDER:
        if snapshot.of(type_url) or type_url in (typeurls.CLUSTER, typeurls.LISTENER):
            client.send(client.request(type_url, _names(snapshot, type_url)))
            client.asked.add(type_url)
    while responses := client.machine.next_responses(snapshot):
        for r in responses:
            _ack(client, snapshot, r.type_url, r.nonce, r.version)


def _ack(client: _Client, snapshot: Snapshot, type_url: str, nonce: str, version: str) -> None:
    client.send(client.request(type_url, _names(snapshot, type_url), nonce, version))


@dataclass
class _Timings:
    step: list[float]
    join: list[float]
    ack: list[float]
    sent_bytes: int = 0
    collect_midway: float = 0.0


def _collect() -> float:
    """Seconds of a full collector pass (what is frozen is not looked at)."""
    gc.enable()
    t0 = time.thread_time()
    gc.collect()
    elapsed = time.thread_time() - t0
    gc.disable()
    return elapsed


def _change(clients: list[_Client], snapshot: Snapshot) -> _Timings:
    """Every stream is sent the change, then (a collector pass midway) every stream ACKs it."""
    out = _Timings([], [], [])
    sent = []
    for client in clients:
        to_bytes: Callable[[Response], bytes] = _delta_bytes if client.delta else _sotw_bytes
        t0 = time.thread_time()
        responses = client.machine.next_responses(snapshot)
        t1 = time.thread_time()
        data = [to_bytes(r) for r in responses]
        t2 = time.thread_time()
        out.step.append(t1 - t0)
        out.join.append(t2 - t1)
        out.sent_bytes = max(out.sent_bytes, sum(map(len, data)))
        # As the server's writer: only what the ACK needs is kept once the bytes are written.
        sent.append([(r.type_url, r.nonce, r.version) for r in responses])
    # The server's frequent young-generation passes untrack tuples of strings (the names a
    # response awaiting its answer keeps) soon after they are made; one such pass first.
    gc.collect(0)
    out.collect_midway = _collect()
    for client, answered in zip(clients, sent, strict=True):
        # The client writes its ACKs; the server's part alone is timed.
        acks = [
            client.request(type_url, _names(snapshot, type_url), nonce, version)
            for type_url, nonce, version in answered
        ]
        t0 = time.thread_time()
        for ack in acks:
            client.send(ack)
        out.ack.append(time.thread_time() - t0)
    return out


def _ms(values: list[float]) -> str:
    return f"mean {statistics.fmean(values) * 1e3:6.2f}  max {max(values) * 1e3:6.2f} ms"


def _us(values: list[float]) -> str:
    return f"mean {statistics.fmean(values) * 1e6:6.1f}  max {max(values) * 1e6:6.1f} µs"


@dataclass(frozen=True, slots=True)
class _Step:
    seconds: float
    publish: str
    where: str  # where the step resumed and where it yielded: function and line


def _yielded_at(steps: Any) -> str:
    """The innermost generator's function and line: where this step ended."""
    while steps.gi_yieldfrom is not None and hasattr(steps.gi_yieldfrom, "gi_frame"):
        steps = steps.gi_yieldfrom
    frame = steps.gi_frame
    if frame is None:
        return "end"
    return f"{frame.f_code.co_name}:{frame.f_lineno}"


def _timed_steps(publisher: Publisher, steps: Steps[T], label: str) -> tuple[list[_Step], T]:
    """Run `steps` as `Publisher._sliced` does, timing each step alone (thread CPU)."""
    found: list[_Step] = []
    resumed = "start"
    with publisher._memo.active():
        while True:
            started = time.thread_time()
            try:
                next(steps)
            except StopIteration as done:
                found.append(_Step(time.thread_time() - started, label, f"{resumed} -> end"))
                return found, done.value
            ended = _yielded_at(steps)
            found.append(_Step(time.thread_time() - started, label, f"{resumed} -> {ended}"))
            resumed = ended


def _publish_steps(publisher: Publisher, state: FleetState, label: str) -> list[_Step]:
    """Publish `state` as `publish_in_slices` does, timing each step alone."""
    return _timed_steps(publisher, publisher._publishing(state), label)[0]


def publisher_steps(shape: Shape, top: int, collector: bool = False) -> None:
    """Print the longest steps of the first snapshots (the twelve profiles and a proxyless
    client, as `Publisher.prepare` builds them), then of a member lost and restored to the
    twelve profiles, patched and in full."""
    fleet = Fleet(shape)
    publisher = Publisher(fleet.state())
    found: list[_Step] = []
    gc.collect()
    server = Collector()  # the server's own settings, started as `serve` starts it
    if collector:
        server.start()
    else:
        gc.freeze()
        gc.disable()

    def settle() -> None:
        """What the server does once the streams took a publish (`Collector.quiet`)."""
        if collector:
            server.quiet()
        else:
            gc.freeze()

    try:
        for profile in (*profiles(), PROXYLESS):
            stop = publisher.cache.watch(profile, lambda: None)
            built, snapshot = _timed_steps(publisher, publisher._build(profile), "first")
            found += built
            settle()  # as after each first snapshot
            assert snapshot is not None
            publisher.cache.set(profile, snapshot)
            publisher._budget = publisher._served()  # as `prepare` does after each
            if profile is PROXYLESS:
                stop()  # the member loss is published to the twelve profiles
        gc.collect()
        gc.freeze()
        labelled = (Namespace(NAMESPACE, (("edited", "yes"),)),)
        for full in (False, True):
            for lose in (True, False):
                (fleet.lose if lose else fleet.restore)(LOST_MEMBER)
                state = fleet.state()
                namespaces = publisher.state.namespaces
                if full:
                    # A change beside the members': every profile is translated in full.
                    namespaces = () if namespaces else labelled
                state = replace(state, namespaces=namespaces)
                label = f"{'full' if full else 'patch'} {'lost' if lose else 'restored'}"
                found += _publish_steps(publisher, state, label)
                settle()  # as after each publish
        # A member's own fields edited (a weight, a drain): the index is derived again.
        members = list(publisher.state.members)
        edited = members[LOST_MEMBER]
        members[LOST_MEMBER] = replace(edited, member=replace(edited.member, weight=2))
        weighted = replace(publisher.state, members=tuple(members))
        found += _publish_steps(publisher, weighted, "member edited")
    finally:
        server.stop()
        gc.enable()
        gc.unfreeze()
    print(
        f"publisher, fleet {shape.describe()}: first snapshots (12 profiles and a proxyless"
        f" client), then member {LOST_MEMBER} lost and restored, then weighted (12 profiles)"
    )
    for publish in dict.fromkeys(s.publish for s in found):
        mine = [s.seconds for s in found if s.publish == publish]
        over = sum(1 for s in mine if s > LONG_STEP_SECONDS)
        print(
            f"  {publish:14}: {len(mine):5} steps, total {sum(mine) * 1e3:7.1f} ms,"
            f" longest {max(mine) * 1e3:5.1f} ms, {over} over {LONG_STEP_SECONDS * 1e3:.0f} ms"
        )
    print(f"  longest {top} steps (ms, publish, from the yield it resumed at to the next):")
    for step in sorted(found, key=lambda s: -s.seconds)[:top]:
        print(f"    {step.seconds * 1e3:6.1f}  {step.publish:14}  {step.where}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--endpoints", type=int, default=20_000)
    parser.add_argument("--streams", type=int, default=50, help="per protocol; 0: none")
    parser.add_argument("--top", type=int, default=15, help="the publisher's longest steps")
    parser.add_argument(
        "--collector",
        choices=("off", "server"),
        default="off",
        help="publisher steps: the collector off, or as the server runs it",
    )
    args = parser.parse_args()
    shape = Shape(50, max(1, args.endpoints // 100), args.endpoints)
    publisher_steps(shape, args.top, collector=args.collector == "server")
    if args.streams < 1:
        return
    fleet = Fleet(shape)
    profile = profiles()[0]
    encoder = Encoder()
    with Memo().active():
        first = build_snapshot(translate(fleet.state(), profile), encoder)
        encoder.end_generation()
        fleet.move_marker(1)
        moved = build_snapshot(translate(fleet.state(), profile), encoder).after(first)
        encoder.end_generation()
        fleet.lose(1)
        lost = build_snapshot(translate(fleet.state(), profile), encoder).after(moved)
        encoder.end_generation()
        fleet.restore(1)
        restored = build_snapshot(translate(fleet.state(), profile), encoder).after(lost)
    counts = {t: len(first.of(t)) for t in typeurls.ORDER}
    print(f"fleet {shape.describe()}, profile {profile.describe()}, resources {counts}")
    for delta in (False, True):
        name = "delta" if delta else "sotw"
        gc.collect()
        gc.freeze()
        tracked = len(gc.get_objects())
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        clients = []
        runs = Runs()
        for _ in range(args.streams):
            client = _Client.of(delta, runs)
            _sync(client, first)
            clients.append(client)
        gc.collect()
        per_stream = (tracemalloc.get_traced_memory()[0] - base) / args.streams / 1024
        tracemalloc.stop()
        objects = (len(gc.get_objects()) - tracked) / args.streams
        gc.disable()
        try:
            synced = _collect()
            steady = _change(clients, moved)
            loss = _change(clients, lost)
            back = _change(clients, restored)
        finally:
            gc.enable()
            gc.unfreeze()
        print(
            f"{name:5}: {per_stream:7.1f} KiB/stream, {objects:7.1f} tracked objects/stream;"
            f" full collection {synced * 1e3:.1f} ms synced"
        )
        print(
            f"  one endpoint moved ({steady.sent_bytes / 1e3:.1f} kB): step {_us(steady.step)};"
            f" join {_us(steady.join)}; ack {_us(steady.ack)}"
        )
        for label, t in (("lost", loss), ("restored", back)):
            print(
                f"  member {label:8} ({t.sent_bytes / 1e6:.1f} MB): step {_ms(t.step)};"
                f" join {_ms(t.join)}; ack {_us(t.ack)};"
                f" full collection midway {t.collect_midway * 1e3:.1f} ms"
            )


if __name__ == "__main__":
    main()
