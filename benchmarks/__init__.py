"""`make bench`: how xdsfleet scales and how fast it serves, beside floors where one exists.

A figure alone says little on a shared 2-core machine, so measures that have a floor measure it
in the same run: a bare gRPC server that writes the same pre-serialized bytes to the same
simulated clients, or the irreducible protobuf work of a change. Generators: `fleet` (M members
x S services, E endpoints, six localities), `churn` (flaps, scale steps, members lost and
restored), `clients` (simulated Envoys, in a process of their own). Servers: `targets` (ours and
the floor, in process) and `server` (either, alone in a process, for memory). One module per
measure in `measures/`; `report` and `plots` only present what the measures return.
"""
