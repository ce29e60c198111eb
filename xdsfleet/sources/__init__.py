"""Sources: where the fleet comes from, turned into `FleetState`s for the pipeline.

`files` reads manifests from disk and follows their edits; `kube` watches member clusters and
the fleet cluster. Both parse with `xdsfleet.documents`. A source only describes the fleet: it
must not translate, cache or serve (an import-linter contract).
"""
