"""Documents: YAML and API objects parsed and validated into the model, purely.

`reading` is the strict YAML reader and field access that names file, object and field;
`manifests` parses every kind (with `gateway_api`, `policy` and `ingress`); `references` checks
what documents refer to. Used alike by the sources, the CLI's `validate` and status write-back.
No I/O, no logging: callers read the bytes and report the problems.
"""
