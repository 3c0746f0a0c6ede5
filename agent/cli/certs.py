"""`binkeeper certs`: a CA for a group and one certificate per agent (Common Name = node id,
subject alternative names = the host names and addresses clients use), as PEM files.

Run again with the same --out to add agents: the CA in it is reused. Keys are written
0600. For operators who have their own PKI, docs/security.md says what a certificate needs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import os
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from agent.config import check_node_id

Key = ec.EllipticCurvePrivateKey


def _write(path: Path, data: bytes, private: bool = False) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _key_pem(key: Key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _ca(out: Path, days: int) -> tuple[x509.Certificate, Key]:
    cert_path, key_path = out / "ca.pem", out / "ca.key"
    if cert_path.exists() and key_path.exists():
        key = serialization.load_pem_private_key(key_path.read_bytes(), None)
        assert isinstance(key, ec.EllipticCurvePrivateKey), "ca.key is not an EC key"
        return x509.load_pem_x509_certificate(cert_path.read_bytes()), key
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "binkeeper group CA")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                         False), critical=True)
            .sign(key, hashes.SHA256()))
    _write(key_path, _key_pem(key), private=True)
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return cert, key


def _names(hosts: list[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def _node(out: Path, node_id: str, hosts: list[str], ca: x509.Certificate, ca_key: Key,
          days: int) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node_id)]))
               .issuer_name(ca.subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5))
               .not_valid_after(now + dt.timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                     ExtendedKeyUsageOID.CLIENT_AUTH]),
                              critical=False))
    if hosts:
        builder = builder.add_extension(x509.SubjectAlternativeName(_names(hosts)),
                                        critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    _write(out / f"{node_id}.key", _key_pem(key), private=True)
    _write(out / f"{node_id}.pem", cert.public_bytes(serialization.Encoding.PEM))


def main(args: argparse.Namespace) -> int:
    out = Path(args.out)
    nodes: list[tuple[str, list[str]]] = []
    for spec in args.nodes:
        node_id, _, hosts = spec.partition("=")
        try:
            check_node_id(node_id, "node")
        except ValueError as exc:
            print(f"binkeeper certs: {exc}", file=sys.stderr)
            return 2
        nodes.append((node_id, [h for h in hosts.split(",") if h]))
    out.mkdir(parents=True, exist_ok=True)
    ca, ca_key = _ca(out, args.days)
    for node_id, hosts in nodes:
        _node(out, node_id, hosts, ca, ca_key, args.days)
        print(f"{out / (node_id + '.pem')} and .key: node {node_id}"
              + (f", names {', '.join(hosts)}" if hosts else ""))
    print(f"{out / 'ca.pem'}: the group's CA (ca.key signs new agents: keep it offline)")
    return 0
