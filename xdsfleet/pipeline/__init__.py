"""What a running server does: sources feed the debouncer, the debouncer the publisher, the
publisher translation and the cache, the server reads the cache. `serve` wires it all and is the
only module that knows every other layer."""
