"""The ADS server: per-stream protocol state machines and the gRPC servicer around them.

It reads encoded resources from the cache and never sees sources or translation.
"""
