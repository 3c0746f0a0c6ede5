"""One client connection of the replication port, sans-I/O: bytes in, actions out.

Connection phase: handshake v10 with mysql_native_password (an auth switch when the client
starts with another plugin), credentials from the config, ERR 1045 otherwise. When the
port has a certificate the greeting offers TLS (CLIENT_SSL): a client's SSL request makes
the session ask its loop to start TLS (StartTls), after which the handshake continues
encrypted; with require_tls a login in the clear gets ERR 3159, as MariaDB's
require_secure_transport does. Command
phase: the queries a replica sends (agent/serving/queries.py), COM_REGISTER_SLAVE,
COM_PING, COM_QUIT and COM_BINLOG_DUMP, which hands the connection to the binlog stream.
Anything else gets an ERR packet; malformed packets end the connection.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from agent.mariadb.commands import (
    COM_BINLOG_DUMP,
    COM_INIT_DB,
    COM_PING,
    COM_QUERY,
    COM_QUIT,
    COM_REGISTER_SLAVE,
)
from agent.serving import packets
from agent.serving.packets import PacketError, PacketWriter
from agent.serving.queries import QueryContext, answer

MAX_COMMAND = 1 << 20  # a replica's commands are small; more is garbage or an attack

ER_ACCESS_DENIED = 1045
ER_UNKNOWN_COM = 1047
ER_HANDSHAKE = 1043
ER_SECURE_TRANSPORT_REQUIRED = 3159


@dataclass(frozen=True)
class DumpRequest:
    position: int
    flags: int
    server_id: int
    file_name: str
    gtid_state: str | None  # @slave_connect_state: GTID mode; None: file/position mode
    until_gtid: str | None
    heartbeat_period: float  # seconds; 0 = the server's default
    checksum: bool  # @master_binlog_checksum was CRC32 (the first fake ROTATE gets a CRC)
    first_seq: int  # sequence id of the first event packet


@dataclass(frozen=True)
class Close:
    reason: str


@dataclass(frozen=True)
class StartTls:
    """Wrap the connection in TLS (server side), then call Session.tls_started()."""


Action = bytes | DumpRequest | Close | StartTls


def new_scramble() -> bytes:
    # printable, no NUL: some clients treat the scramble as a C string
    return bytes(33 + b % 94 for b in os.urandom(20))


class Session:
    def __init__(self, *, user: str, password: str, context: QueryContext,
                 connection_id: int, scramble: bytes | None = None, tls: bool = False,
                 require_tls: bool = False) -> None:
        self.user = user
        self.password = password
        self.context = context
        self.connection_id = connection_id
        self.scramble = scramble or new_scramble()
        self.state = "handshake"  # (-> tls -> handshake) -> auth_switch -> command -> dump
        self.tls_offered = tls
        self.require_tls = require_tls
        self.secure = False  # TLS is running
        self.client_user: str | None = None
        self._decoder = packets.PacketDecoder(MAX_COMMAND)

    def greeting(self) -> bytes:
        return PacketWriter(0).frame(
            packets.handshake_v10(self.connection_id, self.scramble,
                                  self.context.server_version, tls=self.tls_offered))

    def take_buffered(self) -> bytes:
        """After StartTls: what the client sent beyond its SSL request — the start of its
        TLS handshake, for the TLS layer."""
        return self._decoder.take_buffered()

    def tls_started(self) -> None:
        """The loop finished the TLS handshake: the handshake response comes next."""
        if self.state != "tls":
            raise RuntimeError(f"tls_started in state {self.state}")
        self.secure = True
        self.state = "handshake"

    def receive_data(self, data: bytes | bytearray) -> list[Action]:
        """Feed bytes from the client; returns what to do, in order."""
        if self.state in ("dump", "closed"):
            return []  # a dumping replica has nothing more to say; its bytes are dropped
        if self.state == "tls":
            raise RuntimeError("the loop must start TLS before passing more bytes")
        self._decoder.receive_data(data)
        actions: list[Action] = []
        while self.state not in ("dump", "closed", "tls"):
            try:
                packet = self._decoder.next_packet()
            except PacketError as exc:
                return actions + self._fail(ER_HANDSHAKE, f"bad packet: {exc}", 0)
            if packet is None:
                break
            seq, payload = packet
            try:
                actions += self._handle(seq, payload)
            except PacketError as exc:
                actions += self._fail(ER_HANDSHAKE, f"malformed packet: {exc}", seq + 1)
        return actions

    def _fail(self, code: int, message: str, seq: int, sqlstate: str = "08S01") -> list[Action]:
        self.state = "closed"
        return [PacketWriter(seq % 256).frame(packets.err_packet(code, message, sqlstate)),
                Close(message)]

    def _handle(self, seq: int, payload: bytes) -> list[Action]:
        reply = PacketWriter((seq + 1) % 256)
        if self.state == "handshake":
            if packets.is_ssl_request(payload):
                if not self.tls_offered or self.secure:
                    raise PacketError("SSL request, but TLS was not offered")
                self.state = "tls"
                return [StartTls()]
            if self.require_tls and not self.secure:
                return self._fail(ER_SECURE_TRANSPORT_REQUIRED,
                                  "Connections using insecure transport are prohibited "
                                  "(this agent's [replication].require_tls)", reply.seq)
            response = packets.parse_handshake_response(payload)
            self.client_user = response.user
            if response.plugin not in (None, "mysql_native_password"):
                self.state = "auth_switch"
                return [reply.frame(packets.auth_switch_request(self.scramble))]
            return self._check_password(response.auth_response, reply)
        if self.state == "auth_switch":
            return self._check_password(payload, reply)
        if not payload:
            raise PacketError("empty command")
        command = payload[0]
        if command == COM_QUERY:
            result = answer(payload[1:].decode("utf-8", "replace"), self.context)
            if result.error is not None:
                return [reply.frame(packets.err_packet(*result.error))]
            if result.columns is None:
                return [reply.frame(packets.ok_packet())]
            return [b"".join(reply.frame(p)
                             for p in packets.result_set(result.columns, result.rows))]
        if command in (COM_PING, COM_INIT_DB, COM_REGISTER_SLAVE):
            return [reply.frame(packets.ok_packet())]
        if command == COM_QUIT:
            self.state = "closed"
            return [Close("client quit")]
        if command == COM_BINLOG_DUMP:
            position, flags, server_id, file_name = packets.parse_binlog_dump(payload)
            variables = self.context.user_vars
            state = variables.get("slave_connect_state")
            period_ns = variables.get("master_heartbeat_period", "0")
            self.state = "dump"
            return [DumpRequest(
                position=position, flags=flags, server_id=server_id, file_name=file_name,
                gtid_state=state, until_gtid=variables.get("slave_until_gtid") or None,
                heartbeat_period=(int(period_ns) / 1e9 if re.fullmatch(r"[0-9]{1,19}", period_ns)
                                  else 0.0),
                checksum=variables.get("master_binlog_checksum", "").upper() == "CRC32",
                first_seq=reply.seq)]
        return [reply.frame(packets.err_packet(
            ER_UNKNOWN_COM, f"Unknown command {command:#04x}", "08S01"))]

    def _check_password(self, response: bytes, reply: PacketWriter) -> list[Action]:
        if self.client_user == self.user and packets.native_password_ok(
                self.scramble, response, self.password):
            self.state = "command"
            return [reply.frame(packets.ok_packet())]
        using = "YES" if response else "NO"
        return self._fail(
            ER_ACCESS_DENIED,
            f"Access denied for user '{self.client_user}' (using password: {using})",
            reply.seq, "28000")
