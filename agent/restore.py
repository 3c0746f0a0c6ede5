"""`binkeeper restore`: committed history out of an agent, as standard binlog files.

The restore is a client of the agent's replication port (`listen_mysql`), so it needs no
access to the agent's disk and gets exactly what a replica would: committed transactions
only, in the primary's file structure. It dumps from the beginning of the timeline and
stops after `--to-gtid` (the server's own UNTIL handling) or before the first transaction
committed after `--to-time`. Replay with `mariadb-binlog DIR/* | mariadb`, or give
`--target mysql://…` and the restore does exactly that itself from a temporary directory.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import struct
import subprocess
import sys
import tempfile
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import pymysql

from agent.binlog_events import GTID, GTID_LIST, HEARTBEAT, ROTATE, Event, TransactionGrouper
from agent.binlog_meta import LOG_EVENT_ARTIFICIAL_F
from agent.binlog_writer import BinlogDirWriter, BinlogWriterError
from agent.config import ConfigError, load_config
from agent.mariadb_local import find_binary
from agent.mysql_server.binlog_stream import GTID_LIST_UNTIL_REACHED
from agent.tailer import ReplicationStream

log = logging.getLogger("binkeeper.restore")

COM_BINLOG_DUMP = 0x12
BINLOG_DUMP_NON_BLOCK = 0x01
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


@dataclass(frozen=True)
class TargetServer:
    host: str
    port: int
    user: str
    password: str

    @classmethod
    def parse(cls, url: str) -> TargetServer:
        """mysql://USER[:PASSWORD]@HOST[:PORT]; the password may be %-encoded."""
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("mysql", "mariadb") or not parts.hostname:
            raise RestoreError(f"--target: {url!r} is not mysql://USER[:PASSWORD]@HOST[:PORT]")
        try:
            port = parts.port or 3306
        except ValueError as exc:
            raise RestoreError(f"--target: {url!r} has a bad port") from exc
        if parts.path not in ("", "/"):
            raise RestoreError("--target: name no database; the binlog names its own")
        return cls(parts.hostname, port, urllib.parse.unquote(parts.username or "root"),
                   urllib.parse.unquote(parts.password or ""))


def replay_into(files: list[Path], target: TargetServer) -> None:
    """`mariadb-binlog FILES | mariadb`: the replay the binlog tools themselves define."""
    with tempfile.TemporaryFile() as decoder_errors:  # a file, so a chatty decoder never blocks
        decoder = subprocess.Popen([find_binary("mariadb-binlog"), *map(str, files)],
                                   stdout=subprocess.PIPE, stderr=decoder_errors)
        assert decoder.stdout is not None
        try:
            client = subprocess.run(
                [find_binary("mariadb"), f"--host={target.host}", f"--port={target.port}",
                 f"--user={target.user}", "--batch", "--protocol=TCP"],
                stdin=decoder.stdout, capture_output=True, text=True,
                env={**os.environ, "MYSQL_PWD": target.password})
        finally:
            decoder.stdout.close()
            decoder_status = decoder.wait()
        decoder_errors.seek(0)
        decoder_message = decoder_errors.read().decode(errors="replace").strip()
    if client.returncode != 0:
        raise RestoreError(f"replay into {target.host}:{target.port} failed "
                           f"(what was applied before the error stays): "
                           f"{client.stderr.strip()}")
    if decoder_status != 0:
        raise RestoreError(f"mariadb-binlog failed: {decoder_message}")


def restore(host: str, port: int, user: str, password: str, out: Path, *,
            timeline: str | None = None, to_gtid: str | None = None,
            to_time: int | None = None) -> tuple[list[Path], str | None]:
    """Write binlog files into OUT; returns them and the last GTID written."""
    conn = pymysql.connect(host=host, port=port, user=user, password=password,
                           connect_timeout=10, read_timeout=120)
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
        conn._next_seq_id = 0
        conn.write_packet(bytes([COM_BINLOG_DUMP]) + struct.pack(
            "<IHI", 4, BINLOG_DUMP_NON_BLOCK, RESTORE_SERVER_ID))
        grouper = TransactionGrouper()
        pending: list[bytes] = []  # the open transaction, held until its commit time is known
        until_reached = False
        while True:
            data = ReplicationStream._read_payload(conn)
            if data[:1] == b"\xff":
                code = struct.unpack_from("<H", data, 1)[0]
                raise RestoreError(f"the agent refused: error {code}: "
                                   f"{data[9:].decode(errors='replace')}")
            if data[:1] == b"\xfe" and len(data) < 9:
                break  # end of the committed history
            event = Event.parse(data[1:])
            if event.flags & LOG_EVENT_ARTIFICIAL_F:
                if event.type_code == ROTATE:
                    writer.start_file(event.raw[19 + 8 : -4].decode())
                elif event.type_code == GTID_LIST and (
                        struct.unpack_from("<I", event.raw, 19)[0] & GTID_LIST_UNTIL_REACHED):
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


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(message)s")
    host, port, user, password = "127.0.0.1", 3307, args.user, args.password
    if args.config:
        try:
            config = load_config(args.config)
        except ConfigError as exc:
            print(f"binkeeper restore: {exc}", file=sys.stderr)
            return 2
        if config.listen_mysql is None:
            print("binkeeper restore: the config has no listen_mysql", file=sys.stderr)
            return 2
        host, port = config.listen_mysql.host, config.listen_mysql.port
        user = user or config.replication.user
        password = password if password is not None else config.replication.password
    if args.source:
        host, _, port_text = args.source.rpartition(":")
        port = int(port_text)
    try:
        target = TargetServer.parse(args.target) if args.target else None
        to_time = parse_time(args.to_time) if args.to_time else None
    except RestoreError as exc:
        print(f"binkeeper restore: {exc}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="binkeeper-restore-") as scratch:
        out = Path(args.out) if args.out else Path(scratch) / "binlogs"
        if out.exists() and any(out.iterdir()):
            print(f"binkeeper restore: {out} is not empty", file=sys.stderr)
            return 2
        try:
            files, last = restore(host, port, user or "repl", password or "", out,
                                  timeline=args.timeline, to_gtid=args.to_gtid,
                                  to_time=to_time)
            if target is not None:
                replay_into(files, target)
        except (RestoreError, BinlogWriterError) as exc:
            print(f"binkeeper restore: {exc}", file=sys.stderr)
            return 1
        except pymysql.err.MySQLError as exc:
            print(f"binkeeper restore: cannot read from {host}:{port}: {exc}", file=sys.stderr)
            return 1
        if target is not None:
            print(f"replayed {len(files)} binlog file(s) into {target.host}:{target.port}, "
                  f"up to GTID {last}")
            return 0
    print(f"wrote {len(files)} binlog file(s) to {out}, up to GTID {last}")
    for path in files:
        print(f"  {path}")
    return 0
