"""Committed history out of an agent, as standard binlog files (`binkeeper restore`).

The restore is a client of the agent's replication port (`listen_mysql`), so it needs no
access to the agent's disk and gets exactly what a replica would: committed transactions
only, in the primary's file structure. It dumps from the beginning of the timeline and
stops after `--to-gtid` (the server's own UNTIL handling) or before the first transaction
committed after `--to-time`. Replay with `mariadb-binlog DIR/* | mariadb`, or give
`--target mysql://…` and the restore does exactly that itself from a temporary directory.
"""

from __future__ import annotations

import datetime as dt
import logging
import struct
from pathlib import Path

import pymysql

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


def restore(host: str, port: int, user: str, password: str, out: Path, *,
            timeline: str | None = None, to_gtid: str | None = None,
            to_time: int | None = None, ssl_ca: str | None = None
            ) -> tuple[list[Path], str | None]:
    """Write binlog files into OUT; returns them and the last GTID written. With SSL_CA the
    connection is TLS, the agent's certificate verified against it (host name included)."""
    conn = pymysql.connect(host=host, port=port, user=user, password=password,
                           connect_timeout=10, read_timeout=120, ssl_ca=ssl_ca,
                           ssl_verify_identity=bool(ssl_ca))
    writer = BinlogDirWriter(out)
    last_gtid: str | None = None
    try:
        with conn.cursor() as cursor:
            if timeline is not None:
                cursor.execute("SELECT @@binkeeper_timeline")
                row = cursor.fetchone()
                served = row[0] if row else None
                if served != timeline:
                    raise RestoreError(f"the agent at {host}:{port} serves timeline "
                                       f"{served!r}, not {timeline!r}")
            for statement in ("SET @master_binlog_checksum = 'CRC32'",
                              "SET @mariadb_slave_capability = 4",
                              "SET @slave_connect_state = ''"):
                cursor.execute(statement)
            if to_gtid:
                cursor.execute("SET @slave_until_gtid = %s", (to_gtid,))
        start_dump(conn, RESTORE_SERVER_ID, BINLOG_DUMP_NON_BLOCK)
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
                    writer.start_file(rotate_target(event.raw))
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
                    for raw in pending:
                        writer.write(raw)
                    last_gtid = transaction.gtid
                    pending = []
                continue
            writer.write(event.raw)
        if to_gtid and not until_reached:
            raise RestoreError(f"GTID {to_gtid} is not in the committed history "
                               f"(it ends at {last_gtid})")
    except BaseException:
        writer.close()
        for path in writer.files:  # a partial restore must not pass for a complete one
            path.unlink(missing_ok=True)
        raise
    finally:
        writer.close()
        conn.close()
    return writer.files, last_gtid
