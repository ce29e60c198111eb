"""A proxyless gRPC client that keeps going when a call fails, run as its own process
(GRPC_XDS_BOOTSTRAP is read process-wide).

Usage: python grpc_xds_tally.py xds:///SVC.NS:PORT N — calls the `Who` method N times through
gRPC's built-in xDS resolver and balancer and prints, as JSON, how many calls each member
answered and how many ended with each failing status (as "status:NAME").
"""

from __future__ import annotations

import json
import sys
from collections import Counter

import grpc


def main() -> None:
    target, count = sys.argv[1], int(sys.argv[2])
    tally: Counter[str] = Counter()
    with grpc.insecure_channel(target) as channel:
        ask = channel.unary_unary("/xdsfleet.test.Who/Ask")
        for _ in range(count):
            try:
                tally[ask(b"", timeout=20, wait_for_ready=True).decode()] += 1
            except grpc.RpcError as error:
                tally[f"status:{error.code().name}"] += 1
    print(json.dumps(dict(tally)))


if __name__ == "__main__":
    main()
