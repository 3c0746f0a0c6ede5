"""The client side of MariaDB's binlog dump, over a PyMySQL connection: the packets a
replica sends (COM_REGISTER_SLAVE, COM_BINLOG_DUMP) and reading what comes back.

Used by the tailer (the leader as the primary's semi-sync replica) and by restores (a
client of an agent's replication port).
"""

from __future__ import annotations

import struct

import pymysql

from agent.mariadb.commands import COM_BINLOG_DUMP, COM_REGISTER_SLAVE

BINLOG_DUMP_NON_BLOCK = 0x01  # end the dump with EOF at the end of the binlog
BINLOG_SEND_ANNOTATE_ROWS_EVENT = 0x02


def read_packet(conn: pymysql.Connection) -> bytes:
    """One logical packet, its sequence number ignored.

    Semi-sync makes sequence numbers race: each ACK restarts the server's count while
    event packets are already on their way, so PyMySQL's strict check cannot be used.
    Payloads of 16 MiB - 1 continue in the next packet.
    """
    parts = []
    while True:
        header = conn._read_bytes(4)
        length = header[0] | header[1] << 8 | header[2] << 16
        parts.append(conn._read_bytes(length))
        if length < 0xFFFFFF:
            return b"".join(parts)


def error_text(packet: bytes) -> str:
    """'error CODE: message' of an ERR packet."""
    code = struct.unpack_from("<H", packet, 1)[0] if len(packet) >= 3 else 0
    return f"error {code}: {packet[9:].decode(errors='replace')}"


def is_end_of_stream(packet: bytes) -> bool:
    return packet[:1] == b"\xfe" and len(packet) < 9


def send_command(conn: pymysql.Connection, payload: bytes) -> None:
    """A command packet: a new exchange, sequence number 0."""
    conn._next_seq_id = 0
    conn.write_packet(payload)


def register_replica(conn: pymysql.Connection, server_id: int,
                     hostname: bytes = b"binkeeper") -> None:
    """COM_REGISTER_SLAVE; raises the server's error if it refuses."""
    send_command(conn, bytes([COM_REGISTER_SLAVE]) + struct.pack("<I", server_id)
                 + bytes([len(hostname)]) + hostname + b"\x00" + b"\x00"
                 + struct.pack("<HII", 0, 0, 0))
    conn._read_packet()  # OK, or raises the server's error


def start_dump(conn: pymysql.Connection, server_id: int, flags: int,
               position: int = 4, file_name: bytes = b"") -> None:
    """COM_BINLOG_DUMP; the events follow, one packet each."""
    send_command(conn, bytes([COM_BINLOG_DUMP])
                 + struct.pack("<IHI", position, flags, server_id) + file_name)
