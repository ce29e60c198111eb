"""Member Secrets: kubeconfigs in the fleet cluster that register (or reach) member clusters.

The "remote secret" convention of other multi-cluster systems (Istio's `istio/multiCluster`
label): a Secret in the server's namespace, labelled `xdsfleet.io/member`, holds a kubeconfig
under the data key `kubeconfig`. Such a Secret is a member of its own, described by its
annotations (`xdsfleet.io/name`, `region`, `zone`, `weight`, `endpoint-mode`), unless a Fleet
member names it in `source.secret`: then it only lends that member its kubeconfig. Only
labelled Secrets are ever read.

The annotations are read by the Fleet's own member parser, so a Secret member is checked exactly
like a `spec.members[]` entry. It must not do I/O: Secret JSON in, `MemberSecret` out.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field

from xdsfleet.documents.manifests import parse_member
from xdsfleet.documents.reading import JsonObject, object_label
from xdsfleet.model.errors import InvalidInput, Problem
from xdsfleet.model.fleet import Member

MEMBER_LABEL = "xdsfleet.io/member"
KUBECONFIG_KEY = "kubeconfig"
# Annotation -> the `spec.members[]` field it stands for.
ANNOTATIONS = {
    "xdsfleet.io/name": "name",
    "xdsfleet.io/region": "region",
    "xdsfleet.io/zone": "zone",
    "xdsfleet.io/weight": "weight",
    "xdsfleet.io/endpoint-mode": "endpointMode",
}
_FIELDS = {v: k for k, v in ANNOTATIONS.items()}


@dataclass(frozen=True, slots=True)
class MemberSecret:
    """One labelled Secret: the kubeconfig it holds, and the member its annotations describe
    (None with `problems` when they do not describe one)."""

    name: str
    kubeconfig: str = field(repr=False)
    member: Member | None
    problems: tuple[Problem, ...] = ()


def _annotated_member(secret: str, annotations: dict[str, str], label: str) -> Member:
    """The member the annotations describe; it is named after the Secret by default."""
    entry: dict[str, object] = {"name": secret, "source": {"secret": secret}}
    for annotation, key in ANNOTATIONS.items():
        value = annotations.get(annotation)
        if value is not None:
            # Annotations are strings; a weight is a number in a Fleet.
            entry[key] = int(value) if key == "weight" and value.isdigit() else value
    try:
        return parse_member(entry, "fleet cluster", label)
    except InvalidInput as invalid:
        # Name the annotation to fix, not the Fleet field it stands for.
        raise InvalidInput(
            [
                Problem(
                    p.file,
                    p.obj,
                    f'metadata.annotations["{_FIELDS[p.field]}"]'
                    if p.field in _FIELDS
                    else p.field,
                    p.message,
                )
                for p in invalid.problems
            ]
        ) from None


def parse_secret(obj: JsonObject) -> MemberSecret:
    """Read a labelled Secret; raises `InvalidInput` when it holds no usable kubeconfig."""
    metadata = obj.get("metadata") or {}
    name = str(metadata.get("name", ""))
    label = object_label("Secret", str(metadata.get("namespace", "")), name)
    encoded = (obj.get("data") or {}).get(KUBECONFIG_KEY)
    try:
        kubeconfig = base64.b64decode(encoded or "", validate=True).decode()
    except (binascii.Error, UnicodeDecodeError) as error:
        problem = Problem("fleet cluster", label, f"data.{KUBECONFIG_KEY}", f"not base64: {error}")
        raise InvalidInput([problem]) from None
    if not kubeconfig.strip():
        field_path = f"data.{KUBECONFIG_KEY}"
        raise InvalidInput([Problem("fleet cluster", label, field_path, "missing or empty")])
    try:
        member = _annotated_member(name, metadata.get("annotations") or {}, label)
    except InvalidInput as invalid:
        return MemberSecret(name, kubeconfig, None, invalid.problems)
    return MemberSecret(name, kubeconfig, member)
