"""What a listener refers to: the route configurations it asks for and the clusters it uses,
from one unpacking of its HTTP connection managers, once per listener for every profile."""

from __future__ import annotations

from unittest import mock

from snapshots import listener

from xdsfleet.cache import uses
from xdsfleet.cache.typeurls import LISTENER
from xdsfleet.translate.listeners import outbound_listener, proxyless_listener


def test_a_listener_names_its_rds_routes_and_the_clusters_of_its_inline_routes() -> None:
    assert uses.listener_references(listener("L", "routes")) == uses.References(
        ("routes",), frozenset()
    )
    assert uses.listener_references(outbound_listener("out:80", 80)) == uses.References(
        ("out:80",), frozenset()
    )
    assert uses.listener_references(proxyless_listener("web.ns:80", "ns/web:80")) == (
        uses.References((), frozenset({"ns/web:80"}))
    )


def test_each_listener_is_unpacked_once_however_many_snapshots_hold_it() -> None:
    shared = proxyless_listener("web.ns:80", "ns/web:80")
    references = uses.ListenerReferences()
    with mock.patch.object(uses, "listener_references", wraps=uses.listener_references) as unpacked:
        for _ in range(3):
            found = uses.uses_of({LISTENER: {"web.ns:80": shared}}, references)
            assert references.of(shared).routes == ()

    assert found[LISTENER] == {"web.ns:80": frozenset({"ns/web:80"})}
    assert unpacked.call_count == 1
