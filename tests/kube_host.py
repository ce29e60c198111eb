"""Emulated member API servers for the Kubernetes cold-start benchmark, in a process of their own.

`python tests/kube_host.py MEMBERS SERVICES ENDPOINTS DIR` (with the repository on PYTHONPATH):
one `ApiEmulator` per member of the benchmark's generated fleet, each holding that member's
Services, EndpointSlices and ServiceExports and paging every list (`cache_pages`: a newer API
server), their kubeconfigs and a Fleet file naming them under DIR. It prints one JSON line
(`{"fleet": ..., "seconds": ...}`) once every emulator serves, and stops them all when its
standard input closes. Its own process, so that serving the lists does not share a core's
interpreter lock with the server being timed.
"""

from __future__ import annotations

import gc
import json
import sys
import time
from pathlib import Path

from kube_api import ApiEmulator

from benchmarks import manifests
from benchmarks.fleet import Fleet, Shape
from xdsfleet.sources.kube import resources

KINDS = {
    "Service": resources.SERVICES,
    "EndpointSlice": resources.ENDPOINT_SLICES,
    "ServiceExport": resources.SERVICE_EXPORTS,
}


def main(members: int, services: int, endpoints: int, root: Path) -> None:
    started = time.perf_counter()
    fleet = Fleet(Shape(members=members, services=services, endpoints=endpoints))
    emulators = [ApiEmulator(cache_pages=True).start() for _ in fleet.members]
    try:
        kubeconfigs = {}
        for m, (member, api) in enumerate(zip(fleet.members, emulators, strict=True)):
            for doc in manifests.member_docs(fleet, m):
                api.apply(KINDS[doc["kind"]], doc)
            kubeconfigs[member.name] = api.kubeconfig(root / f"{member.name}.kubeconfig")
        path = manifests.write_kube(fleet, root, kubeconfigs)
        # What seeding made lives until the end: out of the collector's passes, which would
        # otherwise walk millions of objects (stored objects, their history) while the
        # emulators serve the lists being timed, holding all 50 of them at once.
        gc.collect()
        gc.freeze()
        seconds = time.perf_counter() - started
        print(json.dumps({"fleet": str(path), "seconds": seconds}), flush=True)
        sys.stdin.read()  # until the benchmark is done
    finally:
        for api in emulators:
            api.stop()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4]))
