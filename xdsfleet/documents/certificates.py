"""TLS Secrets checked before Envoy sees them: a key that does not match its certificate, a
certificate that has expired or soon will, and listener hostnames the certificate does not cover.

Envoy rejects a mismatched key only when the listener's secret arrives (the listener then never
serves), and clients reject an expired or misnamed certificate only at connection time; `validate`
says so first, naming the Secret or the Gateway listener. Pure: the clock comes in as `now`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from xdsfleet.documents.reading import object_label, origin_key
from xdsfleet.model.errors import Problem, Severity
from xdsfleet.model.fleet import FleetState, TLSSecret

# How long before expiry `validate` starts warning.
EXPIRY_WARNING = timedelta(days=14)
CERTIFICATE_FIELD = 'data["tls.crt"]'
KEY_FIELD = 'data["tls.key"]'


def certificate_problems(
    state: FleetState, origins: Mapping[str, str], now: datetime
) -> list[Problem]:
    """What is wrong with the fleet's TLS Secrets, and with the hostnames of the HTTPS listeners
    that use them."""
    problems: list[Problem] = []
    leaves: dict[tuple[str, str], x509.Certificate] = {}
    for secret in state.secrets:
        label = object_label("Secret", secret.namespace, secret.name)
        file = origins.get(origin_key(label), "")
        found: list[tuple[str, str, Severity]] = []
        leaf = _check_secret(secret, now, found)
        if leaf is not None:
            leaves[secret.namespace, secret.name] = leaf
        problems.extend(Problem(file, label, f, m, severity) for f, m, severity in found)
    for gateway in state.gateways:
        label = object_label("Gateway", gateway.namespace, gateway.name)
        file = origins.get(origin_key(label), "")
        for i, listener in enumerate(gateway.listeners):
            certificates = [
                leaves[ref.namespace, ref.name]
                for ref in listener.certificate_refs
                if (ref.namespace, ref.name) in leaves
            ]
            if listener.hostname is None or not certificates:
                continue
            if not any(_covers(c, listener.hostname) for c in certificates):
                names = sorted({n for c in certificates for n in _dns_names(c)})
                message = (
                    f"hostname {listener.hostname} is not covered by its certificate "
                    f"(names: {', '.join(names) or 'none'}): clients will refuse the connection"
                )
                problems.append(Problem(file, label, f"spec.listeners[{i}].hostname", message))
    return problems


def rejected_problems(secret: TLSSecret, file: str) -> list[Problem]:
    """What makes Envoy reject the Secret whatever the time (a certificate or key that does not
    parse, a key that does not match): a watched Secret with one of these is refused, so that
    its last good version keeps serving. Time is left out: a certificate issued a second
    "in the future" by a skewed clock is good a second later, with no new event to say so."""
    found: list[tuple[str, str, Severity]] = []
    _load(secret, found)
    label = object_label("Secret", secret.namespace, secret.name)
    return [Problem(file, label, f, m, severity) for f, m, severity in found]


def _check_secret(
    secret: TLSSecret, now: datetime, found: list[tuple[str, str, Severity]]
) -> x509.Certificate | None:
    """Check one Secret, adding (field, message, severity) to `found`; its leaf certificate
    when it parses."""
    leaf = _load(secret, found)
    if leaf is None:
        return None
    error = Severity.ERROR
    expires = leaf.not_valid_after_utc
    if expires <= now:
        found.append((CERTIFICATE_FIELD, f"expired on {expires:%Y-%m-%d %H:%M} UTC", error))
    elif expires - now <= EXPIRY_WARNING:
        days = (expires - now).days
        found.append(
            (
                CERTIFICATE_FIELD,
                f"expires on {expires:%Y-%m-%d %H:%M} UTC, in {days} days",
                Severity.WARNING,
            )
        )
    if leaf.not_valid_before_utc > now:
        starts = leaf.not_valid_before_utc
        found.append((CERTIFICATE_FIELD, f"not valid before {starts:%Y-%m-%d %H:%M} UTC", error))
    return leaf


def _load(secret: TLSSecret, found: list[tuple[str, str, Severity]]) -> x509.Certificate | None:
    """The Secret's leaf certificate when it parses, after adding to `found` what Envoy would
    reject: a certificate or key it cannot read, a key that does not match."""
    error = Severity.ERROR
    try:
        chain = x509.load_pem_x509_certificates(secret.certificate.encode())
    except ValueError as failure:
        found.append((CERTIFICATE_FIELD, f"not a PEM certificate: {failure}", error))
        chain = []
    try:
        key = serialization.load_pem_private_key(secret.private_key.encode(), password=None)
    except (ValueError, TypeError) as failure:
        found.append((KEY_FIELD, f"not an unencrypted PEM private key: {failure}", error))
        key = None
    except Exception as failure:
        found.append((KEY_FIELD, f"cannot be read: {failure}", error))
        key = None
    if not chain:
        return None
    leaf = chain[0]
    if key is not None and _public(key.public_key()) != _public(leaf.public_key()):
        found.append(
            (
                KEY_FIELD,
                "does not match the certificate (Envoy rejects it: KEY_VALUES_MISMATCH)",
                error,
            )
        )
    return leaf


def _public(key: object) -> bytes:
    public_bytes = key.public_bytes  # type: ignore[attr-defined]
    return bytes(public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo))


def _dns_names(certificate: x509.Certificate) -> list[str]:
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return [name.lower() for name in names.value.get_values_for_type(x509.DNSName)]


def _covers(certificate: x509.Certificate, hostname: str) -> bool:
    """Whether a SAN of `certificate` matches `hostname` (RFC 6125: a `*` stands for exactly
    one leftmost label). A wildcard hostname needs the same wildcard, or one that covers it."""
    host = hostname.lower()
    for name in _dns_names(certificate):
        if name == host:
            return True
        if name.startswith("*.") and "." in host:
            label, rest = host.split(".", 1)
            if rest == name[2:] and label != "":
                return True
    return False
