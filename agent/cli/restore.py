"""`binkeeper restore`: committed history up to a GTID or a time, as binlog files in a
directory or replayed into a server."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import tempfile
from pathlib import Path
from types import FrameType

import pymysql

from agent.binlog.writer import BinlogWriterError
from agent.config import ConfigError, load_config
from agent.restore.fetch import RestoreError, parse_time, restore
from agent.restore.replay import TargetServer, replay_into


def _stop(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(f"binkeeper restore: stopped by {signal.Signals(signum).name}; "
                     "nothing was left behind")


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(message)s")
    host, port, user, password = "127.0.0.1", 3307, args.user, args.password
    ssl_ca: str | None = args.ssl_ca
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
        if ssl_ca is None and config.tls is not None:
            ssl_ca = str(config.tls.ca_file)
    if args.source:
        host, _, port_text = args.source.rpartition(":")
        port = int(port_text)
    try:
        target = TargetServer.parse(args.target) if args.target else None
        to_time = parse_time(args.to_time) if args.to_time else None
    except RestoreError as exc:
        print(f"binkeeper restore: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else None
    if out is not None and out.exists() and (not out.is_dir() or any(out.iterdir())):
        print(f"binkeeper restore: {out} is not an empty directory", file=sys.stderr)
        return 2
    # Files are written into a scratch directory beside OUT (same file system) and moved
    # into place only once the restore is complete: an interrupted restore — an error,
    # Ctrl-C or SIGTERM — leaves no partial history that could pass for a whole one.
    signal.signal(signal.SIGTERM, _stop)
    parent = out.parent if out is not None else None
    if parent is not None:
        parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".binkeeper-restore-", dir=parent) as scratch:
        work = Path(scratch) / "binlogs"
        try:
            files, last = restore(host, port, user or "repl", password or "", work,
                                  timeline=args.timeline, to_gtid=args.to_gtid,
                                  to_time=to_time, ssl_ca=ssl_ca)
            if target is not None:
                replay_into(files, target)
            elif out is not None:
                os.replace(work, out)  # atomic: OUT is absent or an empty directory
                _fsync_dir(out.parent)
                files = [out / path.name for path in files]
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
