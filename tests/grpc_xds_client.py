"""A proxyless gRPC client, run as its own process (GRPC_XDS_BOOTSTRAP is read process-wide).

Usage: python grpc_xds_client.py xds:///SVC.NS:PORT N — calls the `Who` method N times through
gRPC's built-in xDS resolver and balancer, and prints the members that answered, as JSON.
"""

from __future__ import annotations

import json
import sys

import grpc


def main() -> None:
    target, count = sys.argv[1], int(sys.argv[2])
    with grpc.insecure_channel(target) as channel:
        ask = channel.unary_unary("/xdsfleet.test.Who/Ask")
        answers = [ask(b"", timeout=20, wait_for_ready=True).decode() for _ in range(count)]
    print(json.dumps(answers))


if __name__ == "__main__":
    main()
