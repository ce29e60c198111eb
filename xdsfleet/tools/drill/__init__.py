"""`xdsfleet drill`: a failure rehearsed on one machine before it happens for real.

Local backends stand in for every endpoint of a fleet (each member in a network namespace of its
own where the machine allows it), `xdsfleet serve` serves that fleet with its own policies to a
real Envoy, a load generator records every request, and a fault (kill, hang, cut) hits one
member mid-load. The same parts serve the project's failover tests, `make bench-dr` and `make
demo`; they start real processes and change the network, so nothing here runs inside `serve`.
"""
