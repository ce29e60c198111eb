"""Staging a fleet for the drill: a copy whose every endpoint address is one of this machine's,
the gateway on a free port, the user's files untouched."""

from __future__ import annotations

from pathlib import Path

from harness.scenarios import GATEWAY, REGIONAL, TARGET_PORT, write_fleet
from xdsfleet.model.fleet import EndpointMode
from xdsfleet.sources.files import load_fleet
from xdsfleet.tools.drill.stage import stage
from xdsfleet.tools.drill.topology import Topology


def test_every_endpoint_maps_to_a_local_address_and_the_original_stays(tmp_path: Path) -> None:
    original = write_fleet(REGIONAL, tmp_path / "user")
    before = {p: p.read_text() for p in original.parent.rglob("*.yaml")}
    with Topology(namespaces=False) as topology:
        staged = stage(original, GATEWAY, topology, tmp_path / "work", delays={})

        copy = load_fleet(staged.fleet).state
        for member in copy.members:
            local = set(topology.addresses(member.member.name))
            if member.member.endpoint_mode is EndpointMode.NODE_PORT:
                served = {n.addresses[0] for n in member.nodes}
            else:
                served = {
                    a for s in member.endpoint_slices for e in s.endpoints for a in e.addresses
                }
            assert served == local
            assert {address for address, _ in staged.listen[member.member.name]} == local
        assert staged.listen["zone-a"][0][1] == TARGET_PORT
        [gateway] = copy.gateways
        assert gateway.listeners[0].port == staged.listeners["http"]
    assert {p: p.read_text() for p in original.parent.rglob("*.yaml")} == before
