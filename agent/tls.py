"""TLS for the agent's listeners and its dials to peers: one CA for the group, one
certificate per agent whose Common Name is the agent's node id.

Between agents TLS is mutual: each side proves its certificate chains to the group's CA,
and the node id a peer may speak for is the one in its certificate, never the one it
claims in its Hello. Host names are not checked — an agent is identified by its node id,
which survives a change of address; a certificate signed by the group's CA for another
node id is refused. The replication port and the admin API present the same certificate.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID


class TlsError(ValueError):
    """A certificate or key cannot be used; the message says which file and why, and KEY
    which setting of TlsFiles names it."""

    def __init__(self, message: str, key: str = "cert_file") -> None:
        super().__init__(message)
        self.key = key


@dataclass(frozen=True)
class TlsFiles:
    ca_file: Path  # the group's CA: peers must present certificates it signed
    cert_file: Path  # this agent's certificate (chain), CN = node id
    key_file: Path  # its private key (PEM, unencrypted)


def certificate_node_id(path: Path) -> str:
    """The node id (Common Name) of the first certificate in PATH."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TlsError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        certificate = x509.load_pem_x509_certificate(data)
    except ValueError as exc:
        raise TlsError(f"{path} holds no PEM certificate: {exc}") from exc
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not names:
        raise TlsError(f"{path}: the certificate has no Common Name (it must be the node id)")
    value = names[0].value
    return value if isinstance(value, str) else value.decode()


def node_id_of(peer_certificate: dict[str, Any] | None) -> str | None:
    """The Common Name of a verified peer certificate (ssl's getpeercert() form)."""
    for rdn in (peer_certificate or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


def _context(purpose: ssl.Purpose, files: TlsFiles) -> ssl.SSLContext:
    context = ssl.create_default_context(purpose)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_verify_locations(cafile=str(files.ca_file))
    except (OSError, ssl.SSLError) as exc:
        raise TlsError(f"cannot use {files.ca_file} as the CA: {exc}", "ca_file") from exc
    try:
        context.load_cert_chain(str(files.cert_file), str(files.key_file))
    except (OSError, ssl.SSLError) as exc:
        raise TlsError(f"cannot use {files.cert_file} with the key {files.key_file}: "
                       f"{exc}") from exc
    return context


def peer_server_context(files: TlsFiles) -> ssl.SSLContext:
    """Accepting peers: their certificate is required and must chain to the CA."""
    context = _context(ssl.Purpose.CLIENT_AUTH, files)
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def peer_client_context(files: TlsFiles) -> ssl.SSLContext:
    """Dialing peers: the answering certificate must chain to the CA; its node id is
    checked by the caller against the peer it meant to reach."""
    context = _context(ssl.Purpose.SERVER_AUTH, files)
    context.check_hostname = False  # identity is the node id in the certificate
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def server_context(files: TlsFiles) -> ssl.SSLContext:
    """The replication port: clients (replicas, mariadb-binlog) need no certificate."""
    context = _context(ssl.Purpose.CLIENT_AUTH, files)
    context.verify_mode = ssl.CERT_NONE
    return context


def check(files: TlsFiles, node_id: str) -> None:
    """Refuse at start what would fail later: unreadable files, a key that does not match,
    or a certificate issued to another node."""
    peer_server_context(files)
    owner = certificate_node_id(files.cert_file)
    if owner != node_id:
        raise TlsError(f"{files.cert_file} is the certificate of node {owner!r} (its Common "
                       f"Name), not of this agent ({node_id!r})")
