"""Kubernetes sources: member clusters and the fleet cluster, watched live (docs/kubernetes.md).

`client` is the only module that imports `kubernetes` (an import-linter contract). `watching`
lists and watches one resource in a thread; `mirror` keeps its parsed objects and `group` runs a
cluster's reflectors side by side; `objects` parses API objects with the file parser. `members`
and `fleetcluster` build the model from them, with `secrets` and `ingress`; `lease` and `status`
write back. Nothing here translates or knows about Envoy; joining sources is the app's job.
"""
