"""Type URLs of the resources served, and the order in which they must reach a client."""

from typing import Final

CLUSTER: Final = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT: Final = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
LISTENER: Final = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE: Final = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
SECRET: Final = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"

# xds-protocol rule 13: clusters, then their endpoints, then listeners, then routes. Secrets
# come before listeners: a listener warms until the certificates it names have arrived.
ORDER: Final = (CLUSTER, ENDPOINT, SECRET, LISTENER, ROUTE)

# SotW responses of these types carry the complete set: a name left out is deleted (rule 10).
FULL_STATE: Final = frozenset({CLUSTER, LISTENER})

SHORT_NAMES: Final = {
    CLUSTER: "CDS",
    ENDPOINT: "EDS",
    SECRET: "SDS",
    LISTENER: "LDS",
    ROUTE: "RDS",
}
