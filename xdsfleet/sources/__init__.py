"""Sources: where the fleet comes from, turned into `FleetState`s for the rest of the program.

`manifests` parses and validates YAML documents (pure); `files` reads them from disk and follows
their edits. A source only describes the fleet: it must not translate it or know about Envoy.
"""
