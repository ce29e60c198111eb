"""Replays the upstream Gateway API conformance cases through xdsfleet (`make conformance`);
not part of the package, not run by `make test`."""
