"""The TrafficPolicy CRD and the parser agree: what the documentation shows validates against
the schema, and the schema refuses what the parser refuses (tests/test_kube_manifests.py checks
every example of the repository against its CRD)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from kube_schema import problems, unknown_keywords

from xdsfleet.documents.policy import SPEC_FIELDS

ROOT = Path(__file__).parent.parent
[CRD] = list(yaml.safe_load_all((ROOT / "k8s" / "crds" / "trafficpolicy.yaml").read_text()))
[VERSION] = CRD["spec"]["versions"]
SCHEMA: dict[str, Any] = VERSION["schema"]["openAPIV3Schema"]
DOCUMENTED = [
    yaml.safe_load(block)
    for block in re.findall(r"```yaml\n(.*?)```", (ROOT / "docs" / "policy.md").read_text(), re.S)
]


def test_the_schema_uses_only_keywords_the_checks_understand() -> None:
    assert unknown_keywords(SCHEMA) == []


def test_the_schema_has_the_settings_the_parser_reads() -> None:
    assert set(SCHEMA["properties"]["spec"]["properties"]) == {"targetRefs", *SPEC_FIELDS}


@pytest.mark.parametrize("document", DOCUMENTED, ids=lambda d: d["metadata"]["name"])
def test_every_documented_policy_validates_against_the_schema(document: dict[str, Any]) -> None:
    assert problems(document, SCHEMA) == []


def test_the_schema_refuses_what_the_parser_refuses() -> None:
    bad = {
        "apiVersion": "xdsfleet.io/v1alpha1",
        "kind": "TrafficPolicy",
        "metadata": {"name": "p", "namespace": "default"},
        "spec": {
            "targetRefs": [{"kind": "Pod", "name": "web"}],
            "members": [{"name": "a", "weight": 10_001}, {"name": "a"}],
            "retry": {"perTryTimeout": "2 seconds", "retryOn": ["sometimes"]},
            "sessionPersistence": {"consistentHash": {"algorithm": "Maglev"}},
            "weights": {},
        },
    }
    found = problems(bad, SCHEMA)
    for expected in (
        "spec.targetRefs[0].kind: 'Pod' is not one of",
        "spec.members[0].weight: 10001 out of bounds",
        "spec.members: duplicate ['name']",
        "spec.retry.perTryTimeout: '2 seconds' does not match",
        "spec.retry.retryOn[0]: 'sometimes' is not one of",
        "spec.sessionPersistence.consistentHash: matches none of oneOf",
        "spec.weights: not in the schema",
    ):
        assert any(p.startswith(expected) for p in found), (expected, found)
