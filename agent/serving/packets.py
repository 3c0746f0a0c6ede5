"""MySQL/MariaDB client-server packets, sans-I/O: framing and the few messages a binlog
server needs (handshake, authentication, OK/ERR/EOF, text result sets).

A packet is `length (3 bytes LE) | sequence id (1) | payload`; a payload of 0xFFFFFF bytes
or more continues in the next packet. Sequence ids count up within one command exchange
and wrap at 256; the client checks them, so every writer here carries its counter.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass

MAX_CHUNK = 0xFFFFFF

# capability flags (server side: what we speak)
CLIENT_LONG_PASSWORD = 0x1
CLIENT_FOUND_ROWS = 0x2
CLIENT_LONG_FLAG = 0x4
CLIENT_CONNECT_WITH_DB = 0x8
CLIENT_PROTOCOL_41 = 0x200
CLIENT_SSL = 0x800
CLIENT_TRANSACTIONS = 0x2000
CLIENT_SECURE_CONNECTION = 0x8000
CLIENT_PLUGIN_AUTH = 0x80000
CLIENT_CONNECT_ATTRS = 0x100000
CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA = 0x200000
SERVER_CAPABILITIES = (
    CLIENT_LONG_PASSWORD | CLIENT_FOUND_ROWS | CLIENT_LONG_FLAG | CLIENT_CONNECT_WITH_DB
    | CLIENT_PROTOCOL_41 | CLIENT_TRANSACTIONS | CLIENT_SECURE_CONNECTION
    | CLIENT_PLUGIN_AUTH | CLIENT_CONNECT_ATTRS | CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
)
SERVER_STATUS_AUTOCOMMIT = 0x2
CHARSET_UTF8_GENERAL = 33
NATIVE_PASSWORD = b"mysql_native_password"
FIELD_TYPE_VAR_STRING = 0xFD


class PacketError(ValueError):
    """A malformed packet from the client; the connection cannot continue."""


class PacketDecoder:
    """Bytes in, (sequence id, payload) out; refuses payloads above MAX_PAYLOAD before
    buffering them."""

    def __init__(self, max_payload: int) -> None:
        self.max_payload = max_payload
        self._buf = bytearray()
        self._parts: list[bytes] = []
        self._size = 0

    def receive_data(self, data: bytes | bytearray) -> None:
        self._buf += data

    def take_buffered(self) -> bytes:
        """Bytes received but not yet part of a packet (e.g. a TLS ClientHello that
        followed an SSL request in the same read)."""
        data = bytes(self._buf)
        self._buf.clear()
        return data

    def next_packet(self) -> tuple[int, bytes] | None:
        while len(self._buf) >= 4:
            length = self._buf[0] | self._buf[1] << 8 | self._buf[2] << 16
            seq = self._buf[3]
            if self._size + length > self.max_payload:
                raise PacketError(
                    f"packet of more than {self.max_payload} bytes from the client")
            if len(self._buf) < 4 + length:
                return None
            chunk = bytes(self._buf[4 : 4 + length])
            del self._buf[: 4 + length]
            self._parts.append(chunk)
            self._size += length
            if length < MAX_CHUNK:
                payload = b"".join(self._parts)
                self._parts, self._size = [], 0
                return seq, payload
        return None


class PacketWriter:
    """Frames payloads with consecutive sequence ids."""

    def __init__(self, seq: int = 0) -> None:
        self.seq = seq

    def frame_into(self, out: bytearray, prefix: bytes, payload: bytes | memoryview) -> None:
        """Append PREFIX + PAYLOAD as packets to OUT, copying the payload once."""
        size = len(prefix) + len(payload)
        if size >= MAX_CHUNK:
            out += self.frame(prefix + bytes(payload))
            return
        out += struct.pack("<I", size)[:3]
        out.append(self.seq)
        out += prefix
        out += payload
        self.seq = (self.seq + 1) % 256

    def frame(self, payload: bytes) -> bytes:
        out = []
        view = memoryview(payload)
        while True:
            chunk = view[:MAX_CHUNK]
            out.append(struct.pack("<I", len(chunk))[:3] + bytes([self.seq]))
            out.append(bytes(chunk))
            self.seq = (self.seq + 1) % 256
            view = view[MAX_CHUNK:]
            if len(chunk) < MAX_CHUNK:
                return b"".join(out)


# ---- length-encoded values ---------------------------------------------------------------

def lenenc_int(value: int) -> bytes:
    if value < 0xFB:
        return bytes([value])
    if value < 1 << 16:
        return b"\xfc" + struct.pack("<H", value)
    if value < 1 << 24:
        return b"\xfd" + struct.pack("<I", value)[:3]
    return b"\xfe" + struct.pack("<Q", value)


def lenenc_str(value: bytes) -> bytes:
    return lenenc_int(len(value)) + value


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise PacketError("packet ends early")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def nul_str(self) -> bytes:
        end = self.data.find(b"\x00", self.pos)
        if end < 0:
            raise PacketError("string is not NUL-terminated")
        out = self.data[self.pos : end]
        self.pos = end + 1
        return out

    def lenenc_int(self) -> int:
        first = self.take(1)[0]
        if first < 0xFB:
            return first
        size = {0xFC: 2, 0xFD: 3, 0xFE: 8}.get(first)
        if size is None:
            raise PacketError(f"bad length-encoded integer prefix {first:#x}")
        return int.from_bytes(self.take(size), "little")

    def rest(self) -> bytes:
        out = self.data[self.pos :]
        self.pos = len(self.data)
        return out

    @property
    def left(self) -> int:
        return len(self.data) - self.pos


# ---- connection phase --------------------------------------------------------------------

SSL_REQUEST_SIZE = 32  # capabilities, max packet, charset, 23 reserved bytes


def handshake_v10(connection_id: int, scramble: bytes, server_version: str,
                  tls: bool = False) -> bytes:
    assert len(scramble) == 20
    caps = SERVER_CAPABILITIES | (CLIENT_SSL if tls else 0)
    return b"".join((
        b"\x0a", server_version.encode() + b"\x00",
        struct.pack("<I", connection_id), scramble[:8], b"\x00",
        struct.pack("<H", caps & 0xFFFF), bytes([CHARSET_UTF8_GENERAL]),
        struct.pack("<H", SERVER_STATUS_AUTOCOMMIT), struct.pack("<H", caps >> 16),
        bytes([21]), b"\x00" * 10, scramble[8:] + b"\x00", NATIVE_PASSWORD + b"\x00",
    ))


@dataclass(frozen=True)
class HandshakeResponse:
    capabilities: int
    user: str
    auth_response: bytes
    database: str | None
    plugin: str | None


def is_ssl_request(payload: bytes) -> bool:
    """The short first half of a handshake response: the client asks for TLS first."""
    return (len(payload) == SSL_REQUEST_SIZE
            and bool(struct.unpack_from("<I", payload)[0] & CLIENT_SSL))


def parse_handshake_response(payload: bytes) -> HandshakeResponse:
    reader = _Reader(payload)
    caps = struct.unpack("<I", reader.take(4))[0]
    if not caps & CLIENT_PROTOCOL_41:
        raise PacketError("client does not speak protocol 4.1")
    reader.take(4 + 1 + 23)  # max packet size, charset, reserved
    user = reader.nul_str().decode("utf-8", "replace")
    if caps & CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA:
        auth = reader.take(reader.lenenc_int())
    elif caps & CLIENT_SECURE_CONNECTION:
        auth = reader.take(reader.take(1)[0])
    else:
        auth = reader.nul_str()
    database = None
    if caps & CLIENT_CONNECT_WITH_DB and reader.left:
        database = reader.nul_str().decode("utf-8", "replace")
    plugin = None
    if caps & CLIENT_PLUGIN_AUTH and reader.left:
        plugin = reader.nul_str().decode("ascii", "replace")
    return HandshakeResponse(caps, user, auth, database, plugin)


def native_password_ok(scramble: bytes, response: bytes, password: str) -> bool:
    """mysql_native_password: the client sends SHA1(pw) XOR SHA1(scramble + SHA1(SHA1(pw)))."""
    if not password:
        return response == b""
    stage1 = hashlib.sha1(password.encode()).digest()
    stage2 = hashlib.sha1(stage1).digest()
    mask = hashlib.sha1(scramble + stage2).digest()
    expected = bytes(a ^ b for a, b in zip(stage1, mask, strict=True))
    return hmac.compare_digest(expected, response)


def native_password_response(scramble: bytes, password: str) -> bytes:
    """What a client sends (used by tests)."""
    if not password:
        return b""
    stage1 = hashlib.sha1(password.encode()).digest()
    mask = hashlib.sha1(scramble + hashlib.sha1(stage1).digest()).digest()
    return bytes(a ^ b for a, b in zip(stage1, mask, strict=True))


def auth_switch_request(scramble: bytes) -> bytes:
    return b"\xfe" + NATIVE_PASSWORD + b"\x00" + scramble + b"\x00"


# ---- replies -------------------------------------------------------------------------------

def ok_packet(affected_rows: int = 0, info: bytes = b"") -> bytes:
    return (b"\x00" + lenenc_int(affected_rows) + lenenc_int(0)
            + struct.pack("<HH", SERVER_STATUS_AUTOCOMMIT, 0) + info)


def err_packet(code: int, message: str, sqlstate: str = "HY000") -> bytes:
    return (b"\xff" + struct.pack("<H", code) + b"#" + sqlstate.encode()[:5]
            + message.encode("utf-8", "replace"))


def eof_packet() -> bytes:
    return b"\xfe" + struct.pack("<HH", 0, SERVER_STATUS_AUTOCOMMIT)


def result_set(columns: list[str], rows: list[list[str | None]]) -> list[bytes]:
    """A text-protocol result set as payloads: count, definitions, EOF, rows, EOF."""
    out = [lenenc_int(len(columns))]
    for name in columns:
        encoded = name.encode()
        out.append(b"".join((
            lenenc_str(b"def"), lenenc_str(b""), lenenc_str(b""), lenenc_str(b""),
            lenenc_str(encoded), lenenc_str(encoded), b"\x0c",
            struct.pack("<HIBHB", CHARSET_UTF8_GENERAL, 1024, FIELD_TYPE_VAR_STRING, 0, 0),
            b"\x00\x00",
        )))
    out.append(eof_packet())
    for row in rows:
        out.append(b"".join(
            b"\xfb" if value is None else lenenc_str(value.encode()) for value in row))
    out.append(eof_packet())
    return out


def parse_binlog_dump(payload: bytes) -> tuple[int, int, int, str]:
    """COM_BINLOG_DUMP: (position, flags, server id, file name)."""
    if len(payload) < 11:
        raise PacketError("COM_BINLOG_DUMP too short")
    position, flags, server_id = struct.unpack_from("<IHI", payload, 1)
    return position, flags, server_id, payload[11:].decode("utf-8", "replace")
