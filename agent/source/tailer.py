"""The leader's replication connection to the MariaDB primary, as a semi-sync replica.

Blocking (PyMySQL), so it runs in a worker thread. It owns the dump loop instead of using
python-mysql-replication's, which drops event types it does not know, cannot send semi-sync
ACKs and in MariaDB mode resumes by GTID only: here every event comes back verbatim.

On the wire (MARIADB.md): after `SET @rpl_semi_sync_slave=1`, each event packet is
`00 EF <flag> <event>`; flag 1 asks for an ACK, a new packet with sequence number 0:
`EF <next position, 8 bytes LE> <binlog file name>`.
"""

from __future__ import annotations

import logging
import socket
import struct
from dataclasses import dataclass

import pymysql

from agent.binlog.events import ROTATE, Event, rotate_target
from agent.mariadb.dump_client import (
    BINLOG_SEND_ANNOTATE_ROWS_EVENT,
    error_text,
    is_end_of_stream,
    read_packet,
    register_replica,
    start_dump,
)

log = logging.getLogger("binkeeper.tailer")

SEMI_SYNC_MAGIC = 0xEF
SEMI_SYNC_ACK_REQUESTED = 0x01
ACK_TIMEOUT_MS_MIN = 24 * 3600 * 1000  # below a day, semi-sync can quietly turn asynchronous


class PrimarySettingsError(Exception):
    """The primary is configured so that acknowledged commits could be lost."""


class ReplicationError(Exception):
    pass


@dataclass(frozen=True)
class StreamEvent:
    event: Event
    ack_requested: bool
    file_name: str  # the binlog file this event is in


def check_primary_settings(variables: dict[str, str]) -> list[str]:
    """Each problem, with the statement that fixes it."""
    problems = []

    def want(name: str, good: set[str], fix: str) -> None:
        value = variables.get(name)
        if value is None or value.upper() not in good:
            problems.append(f"{name} is {value!r}: run {fix}")

    want("rpl_semi_sync_master_enabled", {"ON", "1"},
         "SET GLOBAL rpl_semi_sync_master_enabled=ON")
    want("rpl_semi_sync_master_wait_point", {"AFTER_SYNC"},
         "SET GLOBAL rpl_semi_sync_master_wait_point='AFTER_SYNC'")
    want("rpl_semi_sync_master_wait_no_slave", {"ON", "1"},
         "SET GLOBAL rpl_semi_sync_master_wait_no_slave=ON")
    want("binlog_format", {"ROW"}, "SET GLOBAL binlog_format='ROW'")
    want("binlog_checksum", {"CRC32"}, "SET GLOBAL binlog_checksum='CRC32'")
    want("log_bin", {"ON", "1"}, "start mariadbd with --log-bin")
    timeout = variables.get("rpl_semi_sync_master_timeout", "0")
    if not timeout.isdigit() or int(timeout) < ACK_TIMEOUT_MS_MIN:
        problems.append(
            f"rpl_semi_sync_master_timeout is {timeout} ms: after it the primary stops waiting "
            "and acknowledges commits no quorum holds; run "
            "SET GLOBAL rpl_semi_sync_master_timeout=4294967295"
        )
    return problems


class ReplicationStream:
    def __init__(self, host: str, port: int, user: str, password: str, server_id: int) -> None:
        self.host, self.port, self.user, self.password = host, port, user, password
        self.server_id = server_id
        self.conn: pymysql.Connection | None = None
        self.file_name = ""
        self.closed = False  # close() was called: a thread still using the stream must stop

    def connect(self, gtid_state: str) -> None:
        """Check the primary, register as a semi-sync replica, start dumping after GTID_STATE."""
        # Deferred, so that close() from the event loop can reach the socket mid-handshake.
        conn = pymysql.connect(host=self.host, port=self.port, user=self.user,
                               password=self.password, autocommit=True, connect_timeout=10,
                               read_timeout=None, defer_connect=True)
        self.conn = conn
        conn.connect()
        self._check_open(conn)
        with conn.cursor() as cursor:
            cursor.execute("SHOW GLOBAL VARIABLES WHERE Variable_name IN ("
                           "'rpl_semi_sync_master_enabled','rpl_semi_sync_master_wait_point',"
                           "'rpl_semi_sync_master_wait_no_slave','rpl_semi_sync_master_timeout',"
                           "'binlog_format','binlog_checksum','log_bin')")
            variables = {str(k): str(v) for k, v in cursor.fetchall()}
            problems = check_primary_settings(variables)
            if problems:
                conn.close()
                raise PrimarySettingsError(
                    f"the primary at {self.host}:{self.port} would not wait for the quorum: "
                    + "; ".join(problems))
            for statement in (
                "SET @master_binlog_checksum = @@global.binlog_checksum",
                "SET @mariadb_slave_capability = 4",
                "SET @master_heartbeat_period = 1000000000",  # 1 s: notice a dead primary
                f"SET @slave_connect_state = '{gtid_state}'",
                "SET @slave_gtid_strict_mode = 1",
                "SET @slave_gtid_ignore_duplicates = 0",
                "SET @rpl_semi_sync_slave = 1",
            ):
                cursor.execute(statement)
        register_replica(conn, self.server_id)
        # flags: blocking, and send ANNOTATE_ROWS events too, so the stream is the binlog
        start_dump(conn, self.server_id, BINLOG_SEND_ANNOTATE_ROWS_EVENT)
        self._check_open(conn)
        log.info("tailing %s:%d as semi-sync replica %d from GTID %r",
                 self.host, self.port, self.server_id, gtid_state)

    def _check_open(self, conn: pymysql.Connection) -> None:
        """Raise if close() ran while CONN was connecting (it may have missed the socket)."""
        if self.closed:
            try:
                conn.close()
            except Exception:
                pass
            raise ReplicationError("closed while connecting")

    def read(self) -> StreamEvent:
        """The next event; blocks until the primary sends one."""
        conn = self.conn
        if conn is None:
            raise ReplicationError("not connected")
        data = read_packet(conn)
        if data[:1] == b"\xff":
            raise ReplicationError(f"the primary sent {error_text(data)}")
        if is_end_of_stream(data):
            raise ReplicationError("the primary ended the binlog stream")
        if data[:1] != b"\x00":
            raise ReplicationError(f"unexpected packet {data[:8].hex()}")
        ack = False
        if len(data) > 2 and data[1] == SEMI_SYNC_MAGIC:
            ack = data[2] == SEMI_SYNC_ACK_REQUESTED
            raw = data[3:]
        else:
            raw = data[1:]
        event = Event.parse(bytes(raw))
        if not event.crc_ok():
            raise ReplicationError(f"CRC32 mismatch in a type {event.type_code:#x} event")
        file_name = self.file_name  # a real ROTATE is the last event of the file it ends
        if event.type_code == ROTATE:
            self.file_name = rotate_target(event.raw)
        return StreamEvent(event, ack, file_name if event.next_pos else self.file_name)

    @staticmethod
    def ack_packet(file_name: str, position: int) -> bytes:
        """The semi-sync ACK telling the primary everything up to POSITION of FILE_NAME is
        safe: a packet of its own with sequence number 0, so the reading thread's packet
        counter is left alone."""
        payload = bytes([SEMI_SYNC_MAGIC]) + struct.pack("<Q", position) + file_name.encode()
        return struct.pack("<I", len(payload))[:3] + b"\x00" + payload

    def _socket(self) -> socket.socket:
        conn = self.conn
        if conn is None or conn._sock is None:
            # An OSError, as a failed write would be: an ACK's sender handles those.
            raise ConnectionError("not connected to the primary")
        sock: socket.socket = conn._sock
        return sock

    def send_raw(self, data: bytes) -> None:
        """Write DATA to the primary, blocking until the kernel took all of it."""
        self._socket().sendall(data)

    def send_raw_nowait(self, data: bytes) -> int:
        """Write what the kernel takes at once; returns how many bytes that was."""
        return self._socket().send(data, socket.MSG_DONTWAIT)

    def close(self) -> None:
        """Close the connection; never blocks.

        The reading thread may be inside a blocking read: PyMySQL's close would wait for
        its buffered reader's lock until the next packet arrives (up to the heartbeat
        period), stalling the event loop. Shutting the socket down first ends that read, and
        a blocked ACK write.
        """
        self.closed = True
        conn = self.conn
        self.conn = None
        if conn is None:
            return
        sock = conn._sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        try:
            conn.close()
        except Exception:
            pass
