"""Offline commands over the same pure layers a server uses: `render` prints the resources a node
would get, `explain` predicts where a request goes, `bootstrap` writes a node's Envoy bootstrap,
and `drill` rehearses a failure with local backends and a real Envoy (it runs processes, never
inside `serve`)."""
