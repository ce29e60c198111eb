"""Cases of upstream tests that build their requests in code the Go reader cannot follow,
converted by hand from the test's source (each says which). Kept small: only what the reader
cannot do; the rest is read from the upstream files at run time.
"""

from __future__ import annotations

from conformance.gocases import Case, GoTest

INFRA = "gateway-conformance-infra"
SAME_NAMESPACE = f"{INFRA}/same-namespace"

# HTTPRouteServiceTypes: its Services without a selector get EndpointSlices the test fills with
# the pods of infra-backend-v1 (setupEndpointSlices); one request per Service, by path.
PODS_OF = {
    (INFRA, "manual-endpointslices"): "infra-backend-v1",
    (INFRA, "headless-manual-endpointslices"): "infra-backend-v1",
}
_SERVICE_TYPES = ("manual-endpointslices", "headless-manual-endpointslices", "headless")


def convert(test: GoTest) -> GoTest:
    """The test with hand-converted cases where it has them."""
    if test.name == "HTTPRouteServiceTypes":
        test.cases = [
            Case(
                {
                    "Request": {"Path": f"/{path}"},
                    "Response": {"StatusCode": 200},
                    "Backend": "infra-backend-v1",
                    "Namespace": INFRA,
                },
                SAME_NAMESPACE,
                None,
                None,
                False,
            )
            for path in _SERVICE_TYPES
        ]
        test.hand = True
    return test
