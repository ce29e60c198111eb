"""TLS and mTLS for the gRPC ports, with certificates reloaded when their files change.

gRPC asks a fetcher for the certificate configuration at every handshake; ours compares the
files' stamps (inode, size, modification time) and reads them again only when one changed, so
a rotated certificate (cert-manager rewriting a mounted Secret) is used by the next connection
without a restart, and connections already open keep theirs. A rotation caught half-written (a
key that does not fit the certificate) is skipped until the files agree again.

It must never log or return the files' content: only their paths.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from pathlib import Path

import grpc
import structlog

log = structlog.get_logger(__name__)


class TlsError(Exception):
    """The certificate, key or CA files cannot be used."""


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """The server's certificate and key; with `client_ca`, clients must present a certificate
    that CA signed (mTLS)."""

    cert: Path
    key: Path
    client_ca: Path | None = None

    @property
    def mutual(self) -> bool:
        return self.client_ca is not None

    def paths(self) -> tuple[Path, ...]:
        return (self.cert, self.key) + ((self.client_ca,) if self.client_ca else ())


def _stamp(paths: tuple[Path, ...]) -> tuple[tuple[int, int, int], ...]:
    stats = [os.stat(path) for path in paths]
    return tuple((s.st_ino, s.st_size, s.st_mtime_ns) for s in stats)


def _check_pair(cert: Path, key: Path) -> None:
    """Raise TlsError unless the key fits the certificate (ssl reads both as OpenSSL will)."""
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as error:
        # The reason only: OpenSSL's messages name no content.
        raise TlsError(f"{cert} and {key}: {getattr(error, 'reason', None) or error}") from None


def _configuration(files: TlsFiles) -> object:
    try:
        _check_pair(files.cert, files.key)
        ca = files.client_ca.read_bytes() if files.client_ca else None
        if ca is not None and b"-----BEGIN CERTIFICATE-----" not in ca:
            raise TlsError(f"{files.client_ca}: no PEM certificate in it")
        return grpc.ssl_server_certificate_configuration(
            [(files.key.read_bytes(), files.cert.read_bytes())], root_certificates=ca
        )
    except OSError as error:
        raise TlsError(f"{error.filename}: {error.strerror}") from None


class Reloading:
    """The certificate configuration fetcher gRPC calls at each handshake."""

    def __init__(self, files: TlsFiles) -> None:
        self.files = files
        try:
            self._stamp = _stamp(files.paths())
        except OSError as error:
            raise TlsError(f"{error.filename}: {error.strerror}") from None
        self.initial = _configuration(files)  # raises TlsError: a start must be refused

    def __call__(self) -> object | None:
        """A new configuration if the files changed since the last one used, else None."""
        try:
            stamp = _stamp(self.files.paths())
            if stamp == self._stamp:
                return None
            configuration = _configuration(self.files)
        except (OSError, TlsError) as error:
            # Mid-rotation, most likely: keep the last good configuration and look again at
            # the next handshake.
            log.warning("tls_reload_skipped", error=str(error))
            return None
        self._stamp = stamp
        log.info("tls_reloaded", files=[str(p) for p in self.files.paths()])
        return configuration


def server_credentials(files: TlsFiles) -> grpc.ServerCredentials:
    """Credentials for `add_secure_port`; raises TlsError if the files cannot be used now."""
    fetcher = Reloading(files)
    return grpc.dynamic_ssl_server_credentials(
        fetcher.initial, fetcher, require_client_authentication=files.mutual
    )


def peer_identity(context: grpc.aio.ServicerContext) -> str | None:
    """The client's identity, from the certificate it presented: its SPIFFE ID (a `spiffe://`
    URI SAN), else its subject's common name; None without a client certificate."""
    auth = context.auth_context()
    for key in ("peer_spiffe_id", "x509_common_name"):
        values = auth.get(key)
        if values:
            return bytes(values[0]).decode(errors="replace")
    return None
