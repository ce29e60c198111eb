"""The API resources the sources read and write, and where each one lives on the API server.

A plain table, so that the watchers, the status writer and the test API emulator agree on
groups, versions and plurals. It must not import `kubernetes`: only `client` does.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsfleet.documents.gateway_api import TLS_SECRET_TYPE


@dataclass(frozen=True, slots=True)
class ApiResource:
    group: str  # "" for the core API
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    # Only the objects this field selector matches: part of the identity, so that two views of
    # one resource (labelled member Secrets, TLS Secrets) are watched and mirrored side by side.
    field_selector: str | None = None

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(
        self, *, namespace: str | None = None, name: str | None = None, subresource: str = ""
    ) -> str:
        """The URL path of the collection (across all namespaces without `namespace`), or of
        one object, or of one object's subresource."""
        root = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if namespace is not None and self.namespaced:
            root += f"/namespaces/{namespace}"
        path = f"{root}/{self.plural}"
        if name is not None:
            path += f"/{name}"
        if subresource:
            path += f"/{subresource}"
        return path


# Members: what a member offers (read-only).
SERVICES = ApiResource("", "v1", "services", "Service")
ENDPOINT_SLICES = ApiResource("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice")
SERVICE_EXPORTS = ApiResource(
    "multicluster.x-k8s.io", "v1alpha1", "serviceexports", "ServiceExport"
)
NODES = ApiResource("", "v1", "nodes", "Node", namespaced=False)

# The fleet cluster: the Fleet, its routes and policies, member Secrets, and the status Lease.
FLEETS = ApiResource("xdsfleet.io", "v1alpha1", "fleets", "Fleet", namespaced=False)
TRAFFIC_POLICIES = ApiResource("xdsfleet.io", "v1alpha1", "trafficpolicies", "TrafficPolicy")
GATEWAYS = ApiResource("gateway.networking.k8s.io", "v1", "gateways", "Gateway")
HTTP_ROUTES = ApiResource("gateway.networking.k8s.io", "v1", "httproutes", "HTTPRoute")
GRPC_ROUTES = ApiResource("gateway.networking.k8s.io", "v1", "grpcroutes", "GRPCRoute")
# v1beta1: the version every Gateway API release since v0.6 serves.
REFERENCE_GRANTS = ApiResource(
    "gateway.networking.k8s.io", "v1beta1", "referencegrants", "ReferenceGrant"
)
# Their labels only: listeners may select the namespaces of the routes they take.
NAMESPACES = ApiResource("", "v1", "namespaces", "Namespace", namespaced=False)
INGRESSES = ApiResource("networking.k8s.io", "v1", "ingresses", "Ingress")
SECRETS = ApiResource("", "v1", "secrets", "Secret")
# Gateway certificates, in any namespace (cert-manager writes them). The API server filters on
# `type`, so no other Secret (a token, a password) is ever sent to the server.
TLS_SECRETS = ApiResource("", "v1", "secrets", "Secret", field_selector=f"type={TLS_SECRET_TYPE}")
LEASES = ApiResource("coordination.k8s.io", "v1", "leases", "Lease")
