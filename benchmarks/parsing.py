"""Per-object cost of reading a member's Services, EndpointSlices and ServiceExports.

`python -m benchmarks.parsing [MEMBERS SERVICES ENDPOINTS] [--full]` reads the documents
`benchmarks.manifests` writes for one member's share of the fleet, both ways the server reads
them: a file's documents in one `parse_documents` call, and one API object at a time through
`sources.kube.objects.parse_object`, as a member list is (read straight off the API object by
`documents/plain.py`'s `api_*` readers). `--full` turns the common-shape readers off, both of
them, to compare with the field-by-field reading alone. CPU time, best of
five, microseconds per object and per kind.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

from benchmarks import manifests
from benchmarks.fleet import Fleet, Shape
from xdsfleet.documents import manifests as parser
from xdsfleet.sources.kube import objects, resources

_RESOURCES = {
    "Service": resources.SERVICES,
    "EndpointSlice": resources.ENDPOINT_SLICES,
    "ServiceExport": resources.SERVICE_EXPORTS,
}
_MEMBER = parser.Place.MEMBER


def _best(run: Callable[[], object], repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        run()
        best = min(best, time.process_time() - start)
    return best


def main(argv: list[str]) -> None:
    full = "--full" in argv
    numbers = [int(a) for a in argv if not a.startswith("--")] or [50, 1_000, 100_000]
    shape = Shape(*numbers)
    if full:
        parser._plain = lambda document: None  # the full reader only
        objects._DIRECT = {}
    docs = manifests.member_docs(Fleet(shape), 0)
    print(f"{shape.describe()}, member 0: {len(docs):,} objects; {'full' if full else 'fast'}")
    for kind, resource in _RESOURCES.items():
        picked: list[dict[str, Any]] = [d for d in docs if d["kind"] == kind]

        def whole_file(picked: list[dict[str, Any]] = picked) -> None:
            parser.parse_documents(picked, "f", _MEMBER)

        whole = _best(whole_file)

        def one_by_one(picked: list[dict[str, Any]] = picked, resource: Any = resource) -> None:
            for doc in picked:
                objects.parse_object(resource, doc, "member m00")

        each = _best(one_by_one)
        print(
            f"  {kind:14} file {whole / len(picked) * 1e6:6.1f} us/object   "
            f"API object {each / len(picked) * 1e6:6.1f} us/object"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
