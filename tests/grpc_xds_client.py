"""A proxyless gRPC client, run as its own process (GRPC_XDS_BOOTSTRAP is read process-wide).

Usage: python grpc_xds_client.py xds:///SVC.NS:PORT N [MEMBER,...] — calls the `Who` method N
times through gRPC's built-in xDS resolver and balancer, and prints the members that answered, as
JSON. Given members, it stops as soon as each of them has answered: which locality takes the
first calls depends on which connection is ready first (on a loaded machine, ten calls all went
to one member), so a fixed small count would test the machine's timing, not the balancing.
"""

from __future__ import annotations

import json
import sys

import grpc


def main() -> None:
    target, count = sys.argv[1], int(sys.argv[2])
    expected = set(sys.argv[3].split(",")) if len(sys.argv) > 3 else None
    answers: list[str] = []
    with grpc.insecure_channel(target) as channel:
        ask = channel.unary_unary("/xdsfleet.test.Who/Ask")
        while len(answers) < count and (expected is None or not expected <= set(answers)):
            answers.append(ask(b"", timeout=20, wait_for_ready=True).decode())
    print(json.dumps(answers))


if __name__ == "__main__":
    main()
