"""The agent's TOML configuration: parsed strictly, refused at start with the key named.

Unknown keys, missing required keys and bad values raise ConfigError whose message names
the offending key (dotted path, e.g. `peers[1].addr`), so an operator sees at once what to fix.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import re
import tomllib
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.tls import TlsError, TlsFiles
from agent.tls import check as check_tls

_NODE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_TIMELINE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


class ConfigError(ValueError):
    """The configuration is unusable; the message names the key."""


@dataclass(frozen=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Peer:
    id: str
    addr: Address


@dataclass(frozen=True)
class MariaDBConfig:
    host: str = "127.0.0.1"
    port: int = 3306
    user: str = "root"
    password: str = ""
    timeline: str = "main"
    server_id: int = 0  # this agent's replica server id on the primary; 0: derived from node_id
    enabled: bool = False  # a [mariadb] table was given: the leader tails this primary


@dataclass(frozen=True)
class ReplicationConfig:
    """Who may pull committed binlog from `listen_mysql`, and how this agent presents itself."""

    user: str = "repl"
    password: str = ""
    server_id: int = 0  # the server id replicas see; 0: derived from node_id
    max_connections: int = 100
    send_timeout: int = 60  # seconds a replica may take no data before it is disconnected
    # Refuse logins that did not start TLS (needs [tls]); default: true when [tls] is set.
    require_tls: bool = False


@dataclass(frozen=True)
class FailoverConfig:
    enabled: bool = True
    primary_timeout_ms: int = 2000  # silence (stream and SQL probe) before the primary is lost


@dataclass(frozen=True)
class ConsensusConfig:
    tick_ms: int = 50
    election_ticks: int = 10  # election timeout is randomized in [1, 2) x this
    heartbeat_ticks: int = 2
    max_batch_bytes: int = 1 << 20
    max_inflight_bytes: int = 8 << 20


@dataclass(frozen=True)
class AdminConfig:
    """Who may use the admin API: holders of tokens signed with this secret (HS256 JWTs
    with a `scope` of `read` or `admin`; docs/security.md). None: no tokens are checked,
    which is allowed only on a loopback listener."""

    jwt_secret: bytes | None = None
    jwt_secret_file: Path | None = None


MIN_SECRET_BYTES = 32


@dataclass(frozen=True)
class Config:
    node_id: str
    data_dir: Path
    listen_peer: Address
    listen_mysql: Address | None = None
    listen_http: Address | None = None
    cluster_id: str = "binkeeper"
    join: bool = False  # a new agent joining a running cluster: starts as a learner
    # The agent beside the MariaDB primary: leadership is handed to it when it is caught
    # up, so the tail of the primary stays on the same machine. Any leader can still tail.
    preferred_leader: str | None = None
    peers: tuple[Peer, ...] = ()
    mariadb: MariaDBConfig = field(default_factory=MariaDBConfig)
    replication: ReplicationConfig = field(default_factory=ReplicationConfig)
    consensus: ConsensusConfig = field(default_factory=ConsensusConfig)
    failover: FailoverConfig = field(default_factory=FailoverConfig)
    admin: AdminConfig = field(default_factory=AdminConfig)
    # [tls]: peers speak mutual TLS (node id from the certificate), the admin API is HTTPS,
    # the replication port offers TLS. None: plain TCP, allowed only on loopback listeners.
    tls: TlsFiles | None = None

    @property
    def timeline_id(self) -> str:
        """32 hex digits, the same on every agent of the cluster for the configured timeline."""
        digest = hashlib.sha256(f"{self.cluster_id}/{self.mariadb.timeline}".encode())
        return digest.hexdigest()[:32]

    @property
    def member_ids(self) -> tuple[str, ...]:
        return tuple(sorted([self.node_id, *(p.id for p in self.peers)]))


def _take(table: dict[str, Any], key: str, where: str, kind: type, default: Any = ...) -> Any:
    name = f"{where}{key}"
    if key not in table:
        if default is ...:
            raise ConfigError(f"{name}: required key is missing")
        return default
    value = table.pop(key)
    # bool is an int in Python; a port of `true` is still a mistake.
    if (kind is int and isinstance(value, bool)) or not isinstance(value, kind):
        raise ConfigError(f"{name}: expected {kind.__name__}, got {type(value).__name__} {value!r}")
    return value


def _no_leftovers(table: dict[str, Any], where: str) -> None:
    if table:
        keys = ", ".join(f"{where}{k}" for k in sorted(table))
        raise ConfigError(f"unknown key(s): {keys}")


def parse_address(text: str, name: str) -> Address:
    """HOST:PORT, or ConfigError naming NAME."""
    return _address(text, name)


def check_node_id(node_id: object, name: str) -> str:
    """A node id (letters, digits, _ . -, up to 63), or ConfigError naming NAME."""
    if not isinstance(node_id, str) or not _NODE_ID.match(node_id):
        raise ConfigError(f"{name}: {node_id!r} is not a valid node id (letters, digits, _ . -)")
    return node_id


def _address(text: str, name: str) -> Address:
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ConfigError(f"{name}: expected HOST:PORT, got {text!r}")
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ConfigError(f"{name}: port {port} is out of range 0-65535")
    return Address(host.strip("[]"), port)


def _positive(value: int, name: str) -> int:
    if value <= 0:
        raise ConfigError(f"{name}: must be positive, got {value}")
    return value


def parse_config(data: dict[str, Any]) -> Config:
    table = dict(data)
    node_id = _take(table, "node_id", "", str)
    if not _NODE_ID.match(node_id):
        raise ConfigError(f"node_id: {node_id!r} is not a valid id (letters, digits, _ . -)")
    data_dir = Path(_take(table, "data_dir", "", str))
    listen_peer = _address(_take(table, "listen_peer", "", str), "listen_peer")
    listen_mysql_text = _take(table, "listen_mysql", "", str, None)
    listen_http_text = _take(table, "listen_http", "", str, None)
    cluster_id = _take(table, "cluster_id", "", str, "binkeeper")
    join = _take(table, "join", "", bool, False)
    preferred_leader = _take(table, "preferred_leader", "", str, None)
    if not cluster_id:
        raise ConfigError("cluster_id: must not be empty")

    peers: list[Peer] = []
    for index, raw in enumerate(_take(table, "peers", "", list, [])):
        where = f"peers[{index}]."
        if not isinstance(raw, dict):
            raise ConfigError(f"peers[{index}]: expected a table with id and addr")
        entry = dict(raw)
        peer_id = _take(entry, "id", where, str)
        if not _NODE_ID.match(peer_id):
            raise ConfigError(f"{where}id: {peer_id!r} is not a valid id")
        addr = _address(_take(entry, "addr", where, str), f"{where}addr")
        _no_leftovers(entry, where)
        peers.append(Peer(peer_id, addr))
    ids = [node_id, *(p.id for p in peers)]
    if preferred_leader is not None and preferred_leader not in ids:
        raise ConfigError(f"preferred_leader: {preferred_leader!r} is not this node or a peer")
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ConfigError(f"peers: duplicate node id(s) {', '.join(duplicates)}")

    mariadb = MariaDBConfig()
    if "mariadb" in table:
        raw_db = _take(table, "mariadb", "", dict)
        db = dict(raw_db)
        defaults = MariaDBConfig()
        mariadb = MariaDBConfig(
            host=_take(db, "host", "mariadb.", str, defaults.host),
            port=_take(db, "port", "mariadb.", int, defaults.port),
            user=_take(db, "user", "mariadb.", str, defaults.user),
            password=_take(db, "password", "mariadb.", str, defaults.password),
            timeline=_take(db, "timeline", "mariadb.", str, defaults.timeline),
            server_id=_take(db, "server_id", "mariadb.", int, 0),
            enabled=True,
        )
        if not 0 <= mariadb.server_id < 2**32:
            raise ConfigError(f"mariadb.server_id: {mariadb.server_id} is out of range")
        if not 1 <= mariadb.port <= 65535:
            raise ConfigError(f"mariadb.port: {mariadb.port} is out of range 1-65535")
        if not _TIMELINE_NAME.match(mariadb.timeline):
            raise ConfigError(f"mariadb.timeline: {mariadb.timeline!r} is not a valid name")
        _no_leftovers(db, "mariadb.")

    replication = ReplicationConfig()
    require_tls: bool | None = None
    if "replication" in table:
        rep = dict(_take(table, "replication", "", dict))
        defaults_r = ReplicationConfig()
        replication = ReplicationConfig(
            user=_take(rep, "user", "replication.", str, defaults_r.user),
            password=_take(rep, "password", "replication.", str, defaults_r.password),
            server_id=_take(rep, "server_id", "replication.", int, 0),
            max_connections=_positive(
                _take(rep, "max_connections", "replication.", int,
                      defaults_r.max_connections), "replication.max_connections"),
            send_timeout=_positive(
                _take(rep, "send_timeout", "replication.", int, defaults_r.send_timeout),
                "replication.send_timeout"),
        )
        require_tls = _take(rep, "require_tls", "replication.", bool, None)
        if not replication.user:
            raise ConfigError("replication.user: must not be empty")
        if not 0 <= replication.server_id < 2**32:
            raise ConfigError(f"replication.server_id: {replication.server_id} is out of range")
        _no_leftovers(rep, "replication.")

    failover = FailoverConfig()
    if "failover" in table:
        fo = dict(_take(table, "failover", "", dict))
        failover = FailoverConfig(
            enabled=_take(fo, "enabled", "failover.", bool, True),
            primary_timeout_ms=_positive(
                _take(fo, "primary_timeout_ms", "failover.", int, 2000),
                "failover.primary_timeout_ms"))
        _no_leftovers(fo, "failover.")

    consensus = ConsensusConfig()
    if "consensus" in table:
        cons = dict(_take(table, "consensus", "", dict))
        defaults_c = ConsensusConfig()
        values = {
            key: _positive(
                _take(cons, key, "consensus.", int, getattr(defaults_c, key)), f"consensus.{key}"
            )
            for key in ConsensusConfig.__dataclass_fields__
        }
        _no_leftovers(cons, "consensus.")
        consensus = ConsensusConfig(**values)
        if consensus.heartbeat_ticks >= consensus.election_ticks:
            raise ConfigError("consensus.heartbeat_ticks: must be below consensus.election_ticks")

    admin = AdminConfig()
    if "admin" in table:
        adm = dict(_take(table, "admin", "", dict))
        secret_file = _take(adm, "jwt_secret_file", "admin.", str, None)
        _no_leftovers(adm, "admin.")
        if secret_file is not None:
            admin = AdminConfig(_read_secret(Path(secret_file)), Path(secret_file))

    tls = _tls(table, node_id) if "tls" in table else None
    if require_tls and tls is None:
        raise ConfigError("replication.require_tls: needs a [tls] table with the certificate "
                          "to offer")
    replication = dataclasses.replace(
        replication, require_tls=require_tls if require_tls is not None else tls is not None)

    listen_mysql = _address(listen_mysql_text, "listen_mysql") if listen_mysql_text else None
    listen_http = _address(listen_http_text, "listen_http") if listen_http_text else None
    # Nothing unauthenticated or in the clear beyond loopback (DESIGN invariant 10).
    if listen_http is not None and not is_loopback(listen_http):
        if admin.jwt_secret is None:
            raise ConfigError(f"listen_http: {listen_http} is not a loopback address, and the "
                              "admin API would take requests from anyone: set "
                              "[admin].jwt_secret_file")
        if tls is None:
            raise ConfigError(f"listen_http: {listen_http} is not a loopback address, and "
                              "bearer tokens would cross the network in the clear: set [tls]")
    if listen_mysql is not None and not is_loopback(listen_mysql):
        if not replication.password:
            raise ConfigError(f"listen_mysql: {listen_mysql} is not a loopback address, and "
                              "[replication].password is empty: set it")
        if tls is None:
            raise ConfigError(f"listen_mysql: {listen_mysql} is not a loopback address, and "
                              "the binlog would cross the network in the clear: set [tls]")
        if not replication.require_tls:
            raise ConfigError(f"replication.require_tls: must be true (its default with "
                              f"[tls]) for listen_mysql {listen_mysql}, which is not a "
                              "loopback address: replicas must use MASTER_SSL=1")
    for index, peer in enumerate(peers):
        if tls is None and not is_loopback(peer.addr):
            raise ConfigError(f"peers[{index}].addr: {peer.addr} is not a loopback address, "
                              "and the binlog would cross the network in the clear: set [tls]")
    if not is_loopback(listen_peer) and tls is None:
        raise ConfigError(f"listen_peer: {listen_peer} is not a loopback address; agents on "
                          "other machines must prove who they are: set [tls] (mutual TLS, "
                          "docs/security.md)")

    _no_leftovers(table, "")
    return Config(
        node_id=node_id,
        data_dir=data_dir,
        listen_peer=listen_peer,
        listen_mysql=listen_mysql,
        listen_http=listen_http,
        cluster_id=cluster_id,
        join=join,
        preferred_leader=preferred_leader,
        peers=tuple(peers),
        mariadb=mariadb,
        replication=replication,
        consensus=consensus,
        admin=admin,
        tls=tls,
        failover=failover,
    )


def _tls(table: dict[str, Any], node_id: str) -> TlsFiles:
    raw = dict(_take(table, "tls", "", dict))
    files = TlsFiles(*(Path(_take(raw, key, "tls.", str))
                       for key in ("ca_file", "cert_file", "key_file")))
    _no_leftovers(raw, "tls.")
    try:
        check_tls(files, node_id)
    except TlsError as exc:
        raise ConfigError(f"tls.{exc.key}: {exc}") from exc
    return files


def is_loopback(address: Address) -> bool:
    if address.host == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.host).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


def _read_secret(path: Path) -> bytes:
    try:
        secret = path.read_bytes().strip()
    except OSError as exc:
        raise ConfigError(f"admin.jwt_secret_file: cannot read {path}: {exc}") from exc
    if len(secret) < MIN_SECRET_BYTES:
        raise ConfigError(f"admin.jwt_secret_file: {path} holds {len(secret)} bytes; use at "
                          f"least {MIN_SECRET_BYTES} random ones (e.g. openssl rand -hex 32)")
    return secret


def derived_server_id(node_id: str) -> int:
    """The server id an agent uses where none is configured (as a replica of the primary,
    and on its replication port): stable per node id, outside the range people pick."""
    return 1_000_000_000 + zlib.crc32(node_id.encode()) % 1_000_000_000


def load_config(path: str | Path) -> Config:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    return parse_config(data)
