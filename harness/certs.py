"""Certificates made on the spot for tests and the conformance harness: self-signed, with the
names, dates and keys a caller asks for. Nothing here is a secret: the keys live as long as
the test."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def certificate(
    names: tuple[str, ...] = ("example.com", "*.example.com"),
    *,
    valid_for: timedelta = timedelta(days=365),
    key: ec.EllipticCurvePrivateKey | None = None,
    now: datetime = NOW,
) -> tuple[str, str]:
    """(certificate PEM, key PEM) valid from a day before `now` until `valid_for` after it."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0] if names else "x")])
    built = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + valid_for)
    )
    if names:
        built = built.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False
        )
    signed = built.sign(key, hashes.SHA256())
    return signed.public_bytes(serialization.Encoding.PEM).decode(), key_pem(key)
