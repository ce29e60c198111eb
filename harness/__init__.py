"""The demo and test harness: local processes (our server, Envoy, HTTP backends) and waits.

Not part of the installed package (an import-linter contract keeps `xdsfleet` from importing it).
"""
