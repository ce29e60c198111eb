"""Kubernetes sources: member clusters and the fleet cluster, watched live.

`client` is the only module that imports `kubernetes` (checked by import-linter); `watching`
lists and watches one resource in a thread; `objects` turns API objects into model objects
through the same parser as files; `members`, `secrets`, `fleetcluster` and `ingress` build the
model from them; `lease` and `status` write back. Nothing here translates or knows about Envoy.
"""
