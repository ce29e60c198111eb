"""`make bench`: how fast an endpoint change reaches many ADS clients, beside a floor.

A figure alone says little on a shared 2-core machine, so every run also measures a floor: a bare
gRPC server that writes the same pre-serialized bytes to the same simulated clients. The ratio
between the two is what the serving path costs on top of gRPC itself.
"""
