"""Offline commands over the same pure layers a server uses: `render` prints the resources a node
would get, `explain` predicts where a request goes, `bootstrap` writes a node's Envoy bootstrap."""
