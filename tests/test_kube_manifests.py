"""The Kubernetes manifests, checked statically (docs/architecture.md, decision 7: the kind e2e
needs Docker).

Every manifest parses; every document of a kind we define validates against its CRD's schema
(and the Fleets against our parser too); RBAC is least privilege; every name a manifest refers
to exists; and `make e2e-kind` without Docker says so and fails.
"""

from __future__ import annotations

import base64
import ipaddress
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from kube_schema import problems, unknown_keywords

from xdsfleet.documents.manifests import Place, parse_documents
from xdsfleet.sources.kube.secrets import MEMBER_LABEL, parse_secret
from xdsfleet.status.writer import LEASE_NAME

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "k8s"
RUN = K8S / "e2e" / "run.sh"
Doc = dict[str, Any]


def documents(path: Path) -> list[Doc]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def manifests(*folders: str) -> list[tuple[Path, Doc]]:
    """Kubernetes objects under k8s/ (kind configs and kustomizations are no objects)."""
    found = []
    for folder in folders or ("crds", "fleet", "member", "examples", "e2e"):
        for path in sorted((K8S / folder).glob("*.yaml")):
            if path.name != "kustomization.yaml":
                found += [(path, doc) for doc in documents(path)]
    return found


def crd_schemas() -> dict[tuple[str, str], Doc]:
    """(apiVersion, kind) -> the openAPIV3Schema of every version of our CRDs."""
    found = {}
    for _, crd in manifests("crds"):
        spec = crd["spec"]
        for version in spec["versions"]:
            api_version = f"{spec['group']}/{version['name']}"
            found[(api_version, spec["names"]["kind"])] = version["schema"]["openAPIV3Schema"]
    return found


def examples_of_our_kinds() -> list[tuple[str, Doc]]:
    """Every document, anywhere in the repository's YAML, of a kind a CRD of ours defines."""
    schemas = crd_schemas()
    found = []
    for path in sorted(
        [*ROOT.glob("examples/**/*.yaml"), *ROOT.glob("xdsfleet/builtin/**/*.yaml")]
    ):
        found += [(str(path.relative_to(ROOT)), d) for d in documents(path)]
    found += [(str(p.relative_to(ROOT)), d) for p, d in manifests()]
    return [
        (where, doc)
        for where, doc in found
        if isinstance(doc, dict) and (doc.get("apiVersion"), doc.get("kind")) in schemas
    ]


def by_kind(kind: str, docs: list[tuple[Path, Doc]] | None = None) -> list[Doc]:
    return [d for _, d in docs or manifests() if d.get("kind") == kind]


def test_every_manifest_is_an_object_with_a_name() -> None:
    for path, doc in manifests():
        assert {"apiVersion", "kind", "metadata"} <= doc.keys(), path
        assert doc["metadata"].get("name"), path


def test_our_crds_use_only_keywords_the_checks_understand() -> None:
    schemas = crd_schemas()
    assert ("xdsfleet.io/v1alpha1", "Fleet") in schemas
    for key, schema in schemas.items():
        assert unknown_keywords(schema) == [], key


@pytest.mark.parametrize(
    ("where", "doc"),
    examples_of_our_kinds(),
    ids=lambda v: v if isinstance(v, str) else v["metadata"]["name"],
)
def test_every_example_of_our_kinds_validates_against_its_crd(where: str, doc: Doc) -> None:
    schema = crd_schemas()[(doc["apiVersion"], doc["kind"])]
    assert problems(doc, schema) == []


def test_the_fleet_schema_refuses_what_the_parser_refuses() -> None:
    schema = crd_schemas()[("xdsfleet.io/v1alpha1", "Fleet")]
    member = {"name": "Zone_A", "region": "eu", "zone": "z", "weight": -1, "source": {}}
    bad = {
        "apiVersion": "xdsfleet.io/v1alpha1",
        "kind": "Fleet",
        "metadata": {"name": "f"},
        "spec": {"members": [member, {**member, "name": "Zone_A"}], "exprtAll": True},
    }
    found = problems(bad, schema)
    assert any("spec.exprtAll: not in the schema" in p for p in found)
    assert any("spec.members[0].name" in p and "does not match" in p for p in found)
    assert any("spec.members[0].weight: -1 out of bounds" in p for p in found)
    assert any("spec.members: duplicate ['name']" in p for p in found)


@pytest.mark.parametrize(
    "path",
    sorted({p for p, d in manifests() if d["kind"] == "Fleet"}),
    ids=lambda p: str(p.relative_to(K8S)),
)
def test_every_fleet_resource_is_accepted_by_our_parser_too(path: Path) -> None:
    fleets = [d for d in documents(path) if d["kind"] == "Fleet"]
    for fleet in fleets:
        parsed = parse_documents([fleet], str(path), Place.FLEET).fleet
        assert parsed is not None
        # A Fleet resource names no directories: the server could not follow them.
        assert all(m.manifests is None for m in parsed.members)


def test_the_member_secret_example_registers_a_member() -> None:
    [secret] = by_kind("Secret", manifests("examples"))
    data = {k: base64.b64encode(v.encode()).decode() for k, v in secret["stringData"].items()}
    stored = {**secret, "data": data}  # what the API server keeps of stringData
    found = parse_secret(stored)
    assert found.problems == ()
    assert found.member is not None
    assert (found.member.name, found.member.zone, found.member.secret) == (
        "zone-a",
        "eu-west-1a",
        "member-zone-a",
    )
    assert secret["metadata"]["labels"][MEMBER_LABEL] == "true"


# --- RBAC ------------------------------------------------------------------------------------

READ = {"get", "list", "watch"}


def test_members_are_only_ever_read() -> None:
    [role] = by_kind("ClusterRole", manifests("member"))
    for rule in role["rules"]:
        assert set(rule["verbs"]) <= READ, rule


def test_in_the_fleet_cluster_the_server_writes_only_status_and_its_lease() -> None:
    docs = manifests("fleet")
    for role in [*by_kind("ClusterRole", docs), *by_kind("Role", docs)]:
        for rule in role["rules"]:
            writes = set(rule["verbs"]) - READ
            if not writes:
                continue
            for resource in rule["resources"]:
                assert resource.endswith("/status") or resource == "leases", rule
            if "update" in writes and rule["resources"] == ["leases"]:
                assert rule["resourceNames"] == [LEASE_NAME]
    # Secrets are read cluster-wide (TLS Secrets of any namespace), never written.
    [secrets] = [
        rule
        for role in [*by_kind("ClusterRole", docs), *by_kind("Role", docs)]
        for rule in role["rules"]
        if "secrets" in rule["resources"]
    ]
    assert set(secrets["verbs"]) == READ


# --- References ------------------------------------------------------------------------------


def test_what_the_server_deployment_refers_to_exists() -> None:
    docs = manifests("fleet")
    [deployment] = by_kind("Deployment", docs)
    namespace = deployment["metadata"]["namespace"]
    assert namespace in {d["metadata"]["name"] for d in by_kind("Namespace", docs)}
    pod = deployment["spec"]["template"]
    accounts = {
        (d["metadata"]["namespace"], d["metadata"]["name"]) for d in by_kind("ServiceAccount", docs)
    }
    assert (namespace, pod["spec"]["serviceAccountName"]) in accounts
    assert deployment["spec"]["replicas"] >= 2
    labels = pod["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    [container] = pod["spec"]["containers"]
    ports = {p["name"] for p in container["ports"]}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["port"] == "metrics"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert {"requests", "limits"} <= container["resources"].keys()
    [service] = by_kind("Service", docs)
    assert service["spec"]["selector"].items() <= labels.items()
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= ports
    [budget] = by_kind("PodDisruptionBudget", docs)
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    # It serves the Fleet resource that is deployed with it.
    [fleet] = by_kind("Fleet", docs)
    assert f"--fleet-resource={fleet['metadata']['name']}" in container["args"]
    mounts = {m["name"] for m in container["volumeMounts"]}
    assert mounts <= {v["name"] for v in pod["spec"]["volumes"]}


def test_role_bindings_bind_roles_and_accounts_that_exist() -> None:
    for folder in ("fleet", "member"):
        docs = manifests(folder)
        roles = {(d["kind"], d["metadata"]["name"]) for _, d in docs if d["kind"].endswith("Role")}
        accounts = {
            (d["metadata"]["namespace"], d["metadata"]["name"])
            for d in by_kind("ServiceAccount", docs)
        }
        bindings = [*by_kind("RoleBinding", docs), *by_kind("ClusterRoleBinding", docs)]
        assert bindings
        for binding in bindings:
            assert (binding["roleRef"]["kind"], binding["roleRef"]["name"]) in roles
            for subject in binding["subjects"]:
                assert (subject["namespace"], subject["name"]) in accounts


def test_the_kustomization_lists_files_that_exist() -> None:
    [kustomization] = documents(K8S / "fleet" / "kustomization.yaml")
    for resource in kustomization["resources"]:
        assert (K8S / "fleet" / resource).is_file(), resource


def test_e2e_objects_refer_to_config_maps_the_script_creates() -> None:
    script = RUN.read_text()
    created = set(re.findall(r"create configmap ([a-z0-9-]+)", script))
    for deployment in by_kind("Deployment", manifests("e2e")):
        pod = deployment["spec"]["template"]["spec"]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        for volume in pod["volumes"]:
            assert volume["configMap"]["name"] in created
        for container in pod["containers"]:
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("configMapKeyRef")
                assert ref is None or ref["name"] in created
        services = [
            s
            for s in by_kind("Service", manifests("e2e"))
            if s["spec"]["selector"].items() <= labels.items()
        ]
        assert services, deployment["metadata"]["name"]


def test_the_script_uses_files_that_exist_and_kind_clusters_that_do_not_overlap() -> None:
    script = RUN.read_text()
    for relative in re.findall(r'"\$K8S/([^"$]+)"', script):
        assert (K8S / relative).exists(), relative
    subnets = []
    for path in sorted((K8S / "kind").glob("*.yaml")):
        [config] = documents(path)
        assert (config["kind"], config["apiVersion"]) == ("Cluster", "kind.x-k8s.io/v1alpha4")
        networking = config["networking"]
        subnets += [ipaddress.ip_network(networking[k]) for k in ("podSubnet", "serviceSubnet")]
    assert len(subnets) == 6
    for i, a in enumerate(subnets):
        assert not any(a.overlaps(b) for b in subnets[i + 1 :]), a


def test_make_e2e_kind_without_docker_says_so_and_fails(tmp_path: Path) -> None:
    # A PATH with make and bash only: no docker, kind or kubectl, whatever this machine has.
    for tool in ("make", "bash"):
        found = subprocess.run(["which", tool], capture_output=True, text=True, check=True)
        os.symlink(found.stdout.strip(), tmp_path / tool)
    result = subprocess.run(
        ["make", "-s", "e2e-kind"],
        cwd=ROOT,
        env={"PATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "needs docker kind kubectl" in result.stderr
    assert "nothing was run" in result.stderr
