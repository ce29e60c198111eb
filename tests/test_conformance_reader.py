"""The conformance replay's Go reader (`conformance/gocases.py`), on a test written here in the
shape of the upstream ones: cases in lists, inside request helpers, filled from table rows, and
a case after an object the test deletes. `make conformance` runs the real ones."""

from __future__ import annotations

from conformance.gocases import constants, parse_file, unread

SUITE = """
package suite
const (
\tInfraNamespace = "infra-ns"
\tBackendV1 = "backend-v1"
)
"""

TEST = """
package tests
var Example = confsuite.ConformanceTest{
\tShortName: "Example",
\tFeatures: []features.FeatureName{features.SupportGateway, features.SupportHTTPRoute},
\tManifests: []string{"example.yaml"},
\tTest: func(t *testing.T, suite *confsuite.ConformanceTestSuite) {
\t\tns := confsuite.InfraNamespace
\t\tgwNN := types.NamespacedName{Name: "gw", Namespace: ns}
\t\tgwAddr := kubernetes.GatewayAndHTTPRoutesMustBeAccepted(
\t\t\tt, c, kubernetes.NewGatewayRef(gwNN, "web"))
\t\tcases := []http.ExpectedResponse{{
\t\t\tRequest: http.Request{Host: "a.example", Path: "/a?x=1"},
\t\t\tBackend: confsuite.BackendV1,
\t\t\tNamespace: ns,
\t\t}, {
\t\t\tRequest: http.Request{Path: "/" + name},
\t\t}}
\t\tfor _, tc := range cases {
\t\t\thttp.MakeRequestAndExpectEventuallyConsistentResponse(t, rt, timeouts, gwAddr, tc)
\t\t}
\t\trows := []struct {
\t\t\thost string
\t\t\tcode int
\t\t}{{host: "b.example", code: 421}, {host: "c.example", code: 404}}
\t\tfor _, row := range rows {
\t\t\texpected := http.ExpectedResponse{
\t\t\t\tRequest:  http.Request{Host: row.host, Path: "/"},
\t\t\t\tResponse: http.Response{StatusCode: row.code},
\t\t\t}
\t\t\ttls.MakeTLSRequestAndExpectEventuallyConsistentResponse(
\t\t\t\tt, rt, to, gwAddr, pem, nil, nil, row.host, expected)
\t\t}
\t\tgrant := v1.ReferenceGrant{ObjectMeta: metav1.ObjectMeta{Name: "g", Namespace: "other"}}
\t\trequire.NoError(t, suite.Client.Delete(ctx, &grant))
\t\thttp.MakeRequestAndExpectEventuallyConsistentResponse(t, rt, to, gwAddr, http.ExpectedResponse{
\t\t\tRequest:  http.Request{Path: "/after"},
\t\t\tResponse: http.Response{StatusCode: 500},
\t\t})
\t},
}
"""


def test_cases_are_read_with_their_gateway_listener_and_values() -> None:
    [test] = parse_file(TEST, constants([SUITE]))
    assert (test.name, test.features, test.manifests) == (
        "Example",
        ["SupportGateway", "SupportHTTPRoute"],
        ["example.yaml"],
    )
    first, computed, *rows, after = test.cases
    assert first.expected == {
        "Request": {"Host": "a.example", "Path": "/a?x=1"},
        "Backend": "backend-v1",
        "Namespace": "infra-ns",
    }
    assert (first.gateway, first.section, first.tls) == ("infra-ns/gw", "web", False)
    # A value computed at run time is marked, never guessed.
    assert unread(computed.expected)
    assert not unread(first.expected)
    # Rows of a table fill the case the loop builds, and give the TLS server name.
    assert [
        (r.expected["Request"]["Host"], r.expected["Response"], r.sni, r.tls) for r in rows
    ] == [
        ("b.example", {"StatusCode": 421}, "b.example", True),
        ("c.example", {"StatusCode": 404}, "c.example", True),
    ]
    assert [c.deleted for c in test.cases[:-1]] == [()] * 4
    assert after.deleted == (("ReferenceGrant", "other", "g"),)


STATUS_ONLY = """
package tests
var StatusOnly = confsuite.ConformanceTest{
\tShortName: "StatusOnly",
\tTest: func(t *testing.T, suite *confsuite.ConformanceTestSuite) {
\t\tgwNN := types.NamespacedName{Name: "gw", Namespace: confsuite.InfraNamespace}
\t\trouteNN := types.NamespacedName{Name: "r", Namespace: "apps"}
\t\tcond := metav1.Condition{
\t\t\tType:   string(v1.RouteConditionAccepted),
\t\t\tStatus: metav1.ConditionFalse,
\t\t\tReason: string(v1.RouteReasonNotAllowedByListeners),
\t\t}
\t\tkubernetes.HTTPRouteMustHaveCondition(t, suite.Client, suite.TimeoutConfig, routeNN, gwNN, cond)
\t\tkubernetes.HTTPRouteMustHaveNoAcceptedParents(t, suite.Client, suite.TimeoutConfig, routeNN)
\t\tfor _, other := range others {
\t\t\tkubernetes.HTTPRouteMustHaveResolvedRefsConditionsTrue(t, c, to, other, gwNN)
\t\t}
\t\tkubernetes.GatewayMustHaveZeroRoutes(t, suite.Client, suite.TimeoutConfig, gwNN)
\t},
}
"""
API = """
const (
\tRouteConditionAccepted RouteConditionType = "Accepted"
\tRouteReasonNotAllowedByListeners RouteConditionReason = "NotAllowedByListeners"
)
"""


def test_status_assertions_are_read_by_position_and_unknown_names_left_out() -> None:
    [test] = parse_file(STATUS_ONLY, constants([SUITE, API]))
    assert not test.custom
    assert [(c.what, c.route, c.gateway, c.condition, c.want) for c in test.status] == [
        (
            "condition",
            "apps/r",
            "infra-ns/gw",
            ("Accepted", "False", "NotAllowedByListeners"),
            None,
        ),
        ("accepted", "apps/r", None, None, False),
        # `other` (a loop variable) cannot be told: that assertion is not guessed.
        ("routes", None, "infra-ns/gw", None, 0),
    ]
