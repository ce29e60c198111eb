"""A fleet served by `xdsfleet serve` and a real Envoy bootstrapped to it, for the end-to-end
tests that send traffic through a gateway: both started, both stopped however the test ends."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from harness.local import Envoy, Server
from xdsfleet.model.node import NodeProfile
from xdsfleet.tools.bootstrap import Target, envoy_bootstrap


@contextlib.contextmanager
def served_envoy(
    fleet: Path,
    node_id: str,
    profile: NodeProfile,
    *,
    delta: bool = False,
    wait_ready: bool = True,
) -> Iterator[tuple[Server, Envoy]]:
    """Serve the Fleet file `fleet` and start an Envoy that is `profile` (over Delta xDS with
    `delta`), bootstrapped as `xdsfleet bootstrap` writes it; ready unless `wait_ready` is
    False (an Envoy that refuses its config never is)."""
    with Server(fleet) as server:
        server.start()
        boot = envoy_bootstrap(
            node_id=node_id,
            cluster="test",
            profile=profile,
            target=Target(port=server.xds_port, delta=delta),
            admin_port=0,
        )
        with Envoy(boot).start(wait_ready=wait_ready) as envoy:
            yield server, envoy
