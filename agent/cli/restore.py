"""`binkeeper restore`: committed history up to a GTID or a time, as binlog files in a
directory (`--out`) or applied to a server by MariaDB's own replication (`--target`)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType, TracebackType

import pymysql
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from agent.binlog.writer import BinlogWriterError
from agent.config import ConfigError, load_config
from agent.restore.apply import (
    Plan,
    RestoreInterrupted,
    TargetServer,
    apply_restore,
)
from agent.restore.fetch import AgentSource, RestoreError, parse_time, restore
from walstore import format_position

PLAIN_EVERY = 5.0  # seconds between progress lines when stderr is not a terminal


def _stop(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ProgressView:
    """Applied transactions against the plan: a rich bar with rate and ETA on a terminal,
    a plain line every few seconds otherwise."""

    def __init__(self, target: TargetServer) -> None:
        self.target = target
        self.live = sys.stderr.isatty()
        self.total = 0
        self.started = time.monotonic()
        self.last_line = 0.0
        self._bar: Progress | None = None
        self._task = TaskID(0)

    def planned(self, plan: Plan) -> None:
        self.total = plan.total
        self.started = time.monotonic()
        after = f" after {format_position(plan.start)}" if plan.start else ""
        print(f"binkeeper restore: applying {plan.total} transaction(s){after} up to GTID "
              f"{format_position(plan.stop)} into {self.target.name}", file=sys.stderr)
        if self.live and plan.total:
            bar = Progress(TextColumn("restore"), BarColumn(), MofNCompleteColumn(),
                           TextColumn("{task.fields[rate]}"), TextColumn("ETA"),
                           TimeRemainingColumn(), TimeElapsedColumn(),
                           TextColumn("{task.fields[position]}"),
                           console=Console(stderr=True), transient=False)
            bar.start()
            self._task = bar.add_task("restore", total=plan.total, rate="", position="")
            self._bar = bar

    def update(self, done: int, total: int, position: str) -> None:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        rate = done / elapsed
        if self._bar is not None:
            self._bar.update(self._task, completed=done, rate=f"{rate:,.0f} tx/s",
                             position=position)
            return
        now = time.monotonic()
        if now - self.last_line < PLAIN_EVERY and done < total:
            return
        self.last_line = now
        eta = f", ETA {(total - done) / rate:.0f} s" if rate > 0 and done < total else ""
        print(f"binkeeper restore: {done}/{total} transactions ({rate:,.0f}/s{eta}), "
              f"target at {position or '(empty)'}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def __enter__(self) -> ProgressView:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()


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
    source = AgentSource(host, port, user or "repl", password or "", ssl_ca, args.timeline)
    signal.signal(signal.SIGTERM, _stop)
    if target is not None:
        return _into_server(source, target, args.to_gtid, to_time, args.stall_timeout)
    return _into_files(source, Path(args.out), args.to_gtid, to_time)


def _into_server(source: AgentSource, target: TargetServer, to_gtid: str | None,
                 to_time: int | None, stall_timeout: float) -> int:
    with ProgressView(target) as view:
        try:
            applied = apply_restore(source, target, to_gtid=to_gtid, to_time=to_time,
                                    progress=view.update, on_plan=view.planned,
                                    stall_timeout=stall_timeout)
        except RestoreInterrupted as exc:
            view.close()
            print(f"binkeeper restore: {exc}", file=sys.stderr)
            return 130 if isinstance(exc.__cause__, KeyboardInterrupt) else 1
        except KeyboardInterrupt:
            view.close()
            print("binkeeper restore: stopped before anything was applied; the target is "
                  "unchanged", file=sys.stderr)
            return 130
        except RestoreError as exc:
            view.close()
            print(f"binkeeper restore: {exc}", file=sys.stderr)
            return 1
        except pymysql.err.MySQLError as exc:
            view.close()
            print(f"binkeeper restore: cannot read from the agent {source.host}:"
                  f"{source.port}: {exc}", file=sys.stderr)
            return 1
    if applied.transactions == 0:
        print(f"nothing to apply: the target {target.name} is already up to GTID "
              f"{applied.position}; replication settings cleared, the target is a plain server")
        return 0
    after = f"after {applied.start}" if applied.start else "from the beginning"
    print(f"applied {applied.transactions} transaction(s) into {target.name} ({after}: "
          f"{applied.first} .. {applied.position}) in {applied.seconds:.1f} s, up to GTID "
          f"{applied.position}; replication settings cleared, the target is a plain server")
    return 0


def _into_files(source: AgentSource, out: Path, to_gtid: str | None,
                to_time: int | None) -> int:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        print(f"binkeeper restore: {out} is not an empty directory", file=sys.stderr)
        return 2
    # Files are written into a scratch directory beside OUT (same file system) and moved
    # into place only once the restore is complete: an interrupted restore — an error,
    # Ctrl-C or SIGTERM — leaves no partial history that could pass for a whole one.
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory(prefix=".binkeeper-restore-", dir=out.parent) as scratch:
            work = Path(scratch) / "binlogs"
            try:
                files, last = restore(source.host, source.port, source.user, source.password,
                                      work, timeline=source.timeline, to_gtid=to_gtid,
                                      to_time=to_time, ssl_ca=source.ssl_ca)
                os.replace(work, out)  # atomic: OUT is absent or an empty directory
                _fsync_dir(out.parent)
                files = [out / path.name for path in files]
            except (RestoreError, BinlogWriterError) as exc:
                print(f"binkeeper restore: {exc}", file=sys.stderr)
                return 1
            except pymysql.err.MySQLError as exc:
                print(f"binkeeper restore: cannot read from {source.host}:{source.port}: "
                      f"{exc}", file=sys.stderr)
                return 1
    except KeyboardInterrupt as exc:
        print(f"binkeeper restore: stopped by {exc or 'SIGINT'}; nothing was left behind",
              file=sys.stderr)
        return 130
    print(f"wrote {len(files)} binlog file(s) to {out}, up to GTID {last}")
    for path in files:
        print(f"  {path}")
    return 0
