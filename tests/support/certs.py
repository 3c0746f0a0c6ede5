"""Certificates for TLS tests, from trustme: a CA per group and one certificate per agent
whose Common Name is its node id (and whose names cover loopback, for HTTPS clients)."""

from __future__ import annotations

from pathlib import Path

import trustme


def write_group(directory: Path, node_ids: list[str],
                ca: trustme.CA | None = None) -> trustme.CA:
    """DIRECTORY/ca.pem and NODE.pem / NODE.key for each node id; returns the CA."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = ca or trustme.CA()
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    for node_id in node_ids:
        write_node(directory, node_id, ca)
    return ca


def write_node(directory: Path, node_id: str, ca: trustme.CA, name: str | None = None) -> None:
    """NAME.pem / NAME.key (default: the node id) for NODE_ID, signed by CA."""
    leaf = ca.issue_cert("127.0.0.1", "localhost", common_name=node_id)
    leaf.cert_chain_pems[0].write_to_path(str(directory / f"{name or node_id}.pem"))
    leaf.private_key_pem.write_to_path(str(directory / f"{name or node_id}.key"))


def write_unnamed(directory: Path, ca: trustme.CA, name: str) -> None:
    """NAME.pem / NAME.key: a certificate the CA signed with no Common Name at all."""
    leaf = ca.issue_cert("127.0.0.1")
    leaf.cert_chain_pems[0].write_to_path(str(directory / f"{name}.pem"))
    leaf.private_key_pem.write_to_path(str(directory / f"{name}.key"))
