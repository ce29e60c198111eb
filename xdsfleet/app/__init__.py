"""Wiring: sources feed the store, the store feeds translation and the cache, the server reads
the cache. The only layer that knows all the others."""
