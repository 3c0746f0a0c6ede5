"""Committed history out of an agent, as standard binlog files (`binkeeper restore --out`).

The restore is a client of the agent's replication port (`listen_mysql`), so it needs no
access to the agent's disk and gets exactly what a replica would: committed transactions
only, in the primary's file structure. It dumps from the beginning of the timeline and
stops after `--to-gtid` (the server's own UNTIL handling; the GTID itself must be in the
history) or before the first transaction committed after `--to-time`. Replay with
`mariadb-binlog DIR/* | mariadb`. The same reading (`read_history`) plans a restore into
a server (`agent.restore.apply`): which transactions it will apply, up to which GTID.
"""

from __future__ import annotations

import datetime as dt
import logging
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pymysql

import walstore
from agent.binlog.events import (
    GTID,
    GTID_LIST,
    GTID_LIST_UNTIL_REACHED,
    HEADER_SIZE,
    HEARTBEAT,
    LOG_EVENT_ARTIFICIAL_F,
    ROTATE,
    Event,
    rotate_target,
)
from agent.binlog.transactions import TransactionGrouper
from agent.binlog.writer import BinlogDirWriter
from agent.mariadb.dump_client import (
    BINLOG_DUMP_NON_BLOCK,
    error_text,
    is_end_of_stream,
    read_packet,
    start_dump,
)

log = logging.getLogger("binkeeper.restore")

RESTORE_SERVER_ID = 4_000_000_001


class RestoreError(Exception):
    pass


def parse_time(text: str) -> int:
    """Unix seconds from '2026-11-24 19:30:00' (UTC unless an offset is given) or digits."""
    if text.isdigit():
        return int(text)
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError as exc:
        raise RestoreError(f"--to-time: {text!r} is not a time (use 'YYYY-MM-DD HH:MM:SS')"
                           ) from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return int(moment.timestamp())


def parse_gtids(text: str, what: str) -> dict[int, walstore.Gtid]:
    """A GTID position ('0-1-42' or '0-1-42,1-2-7'); RestoreError naming WHAT if malformed."""
    try:
        position = walstore.parse_position(text)
    except walstore.GtidError as exc:
        raise RestoreError(f"{what}: {exc}") from exc
    if not position:
        raise RestoreError(f"{what}: no GTID given")
    return position


@dataclass(frozen=True)
class AgentSource:
    """An agent's replication port and the replication user; with SSL_CA the connection is
    TLS, the agent's certificate verified against it (host name included)."""

    host: str
    port: int
    user: str
    password: str
    ssl_ca: str | None = None
    timeline: str | None = None

    def connect(self) -> pymysql.Connection:
        return pymysql.connect(host=self.host, port=self.port, user=self.user,
                               password=self.password, connect_timeout=10, read_timeout=120,
                               ssl_ca=self.ssl_ca, ssl_verify_identity=bool(self.ssl_ca))


class HistorySink(Protocol):
    """Where `read_history` puts what it reads, in stream order."""

    def start_file(self, name: str) -> None: ...

    def event(self, raw: bytes) -> None:
        """An event outside any transaction (FORMAT_DESCRIPTION, GTID_LIST, ...)."""

    def transaction(self, gtid: str, raws: list[bytes]) -> None:
        """A whole committed transaction, within the restore's bound."""


def _start(source: AgentSource, connect_state: str, to_gtid: str | None
           ) -> pymysql.Connection:
    conn = source.connect()
    try:
        with conn.cursor() as cursor:
            if source.timeline is not None:
                cursor.execute("SELECT @@binkeeper_timeline")
                row = cursor.fetchone()
                served = row[0] if row else None
                if served != source.timeline:
                    raise RestoreError(f"the agent at {source.host}:{source.port} serves "
                                       f"timeline {served!r}, not {source.timeline!r}")
            cursor.execute("SET @master_binlog_checksum = 'CRC32'")
            cursor.execute("SET @mariadb_slave_capability = 4")
            cursor.execute("SET @slave_connect_state = %s", (connect_state,))
            if to_gtid:
                cursor.execute("SET @slave_until_gtid = %s", (to_gtid,))
        start_dump(conn, RESTORE_SERVER_ID, BINLOG_DUMP_NON_BLOCK)
    except BaseException:
        conn.close()
        raise
    return conn


def read_history(source: AgentSource, sink: HistorySink, *, to_gtid: str | None = None,
                 to_time: int | None = None) -> dict[int, walstore.Gtid]:
    """Read the agent's committed history from its beginning up to TO_GTID (which must be
    in it, exactly) or up to the last transaction committed at or before TO_TIME, feeding
    SINK. Returns the position reached: per domain, the last transaction given to SINK."""
    until = parse_gtids(to_gtid, "--to-gtid") if to_gtid else None
    conn = _start(source, "", to_gtid)
    reached: dict[int, walstore.Gtid] = {}
    seen_until: set[int] = set()  # domains whose exact --to-gtid GTID was read
    try:
        grouper = TransactionGrouper()
        pending: list[bytes] = []  # the open transaction, held until its commit time is known
        until_reached = False
        while True:
            data = read_packet(conn)
            if data[:1] == b"\xff":
                raise RestoreError(f"the agent refused: {error_text(data)}")
            if is_end_of_stream(data):
                break  # end of the committed history
            event = Event.parse(data[1:])
            if event.flags & LOG_EVENT_ARTIFICIAL_F:
                if event.type_code == ROTATE:
                    sink.start_file(rotate_target(event.raw))
                elif event.type_code == GTID_LIST and (struct.unpack_from(
                        "<I", event.raw, HEADER_SIZE)[0] & GTID_LIST_UNTIL_REACHED):
                    until_reached = True
                    break
                continue
            if event.type_code == HEARTBEAT:
                continue
            if event.type_code == GTID or grouper.in_transaction:
                pending.append(event.raw)
                transaction = grouper.feed(event)
                if transaction is not None:
                    if to_time is not None and event.timestamp > to_time:
                        break
                    gtid = walstore.Gtid.parse(transaction.gtid)
                    if until is not None and until.get(gtid.domain) == gtid:
                        seen_until.add(gtid.domain)
                    sink.transaction(transaction.gtid, pending)
                    reached[gtid.domain] = gtid
                    pending = []
                continue
            sink.event(event.raw)
        if until is not None and (not until_reached or seen_until != set(until)):
            ends = walstore.format_position(reached) or "nothing"
            raise RestoreError(f"GTID {to_gtid} is not in the committed history "
                               f"(it ends at {ends})")
    finally:
        conn.close()
    return reached


def agent_refuses(source: AgentSource, position: str) -> str | None:
    """Why the agent would not serve a replica at POSITION (its ERR text), or None when it
    would: POSITION is a GTID position of its committed history."""
    conn = _start(source, position, None)
    try:
        data = read_packet(conn)
        return error_text(data) if data[:1] == b"\xff" else None
    finally:
        conn.close()


class _FileSink:
    def __init__(self, writer: BinlogDirWriter) -> None:
        self.writer = writer

    def start_file(self, name: str) -> None:
        self.writer.start_file(name)

    def event(self, raw: bytes) -> None:
        self.writer.write(raw)

    def transaction(self, gtid: str, raws: list[bytes]) -> None:
        for raw in raws:
            self.writer.write(raw)


def restore(host: str, port: int, user: str, password: str, out: Path, *,
            timeline: str | None = None, to_gtid: str | None = None,
            to_time: int | None = None, ssl_ca: str | None = None
            ) -> tuple[list[Path], str | None]:
    """Write binlog files into OUT; returns them and the GTID position written up to."""
    source = AgentSource(host, port, user, password, ssl_ca, timeline)
    writer = BinlogDirWriter(out)
    try:
        reached = read_history(source, _FileSink(writer), to_gtid=to_gtid, to_time=to_time)
    except BaseException:
        writer.close()
        for path in writer.files:  # a partial restore must not pass for a complete one
            path.unlink(missing_ok=True)
        raise
    finally:
        writer.close()
    return writer.files, walstore.format_position(reached) or None
