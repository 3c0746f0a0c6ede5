"""A restore into a server through MariaDB's own replication (`binkeeper restore --target`).

The target replicates from an agent's replication port, as a stock replica does
(`MASTER_USE_GTID=slave_pos`), until the restore point (`START SLAVE UNTIL
master_gtid_pos`), so every history a replica can apply restores — `gtid_strict_mode` on,
`CREATE TABLE … AS SELECT` followed by DDL included, which `mariadb-binlog | mariadb`
cannot replay (MARIADB.md, wal-g #2556). Then `STOP SLAVE; RESET SLAVE ALL` leaves a plain
server at that point.

Before it changes anything the restore reads the target and the agent's history
(`read_history`): the restore point must be in the committed history; the target must be
empty (no GTIDs, no user schemas) or hold a prefix of that same history — its
`gtid_slave_pos` a GTID position of the history before the restore point, and no GTIDs of
its own — which is where an interrupted restore left it: the same command then resumes.
Anything else is refused, the target untouched.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
import urllib.parse
from array import array
from bisect import bisect_right
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pymysql
import pymysql.cursors

import walstore
from agent.restore.fetch import (
    AgentSource,
    RestoreError,
    agent_refuses,
    parse_gtids,
    read_history,
)

log = logging.getLogger("binkeeper.restore")

SYSTEM_SCHEMAS = ("mysql", "information_schema", "performance_schema", "sys")
Position = dict[int, walstore.Gtid]
Progress = Callable[[int, int, str], None]  # (applied, total, the target's gtid_slave_pos)


class RestoreInterrupted(RestoreError):
    """Stopped before the restore point; the target is left a plain server at a prefix of
    the history, and the same command resumes."""


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

    @property
    def name(self) -> str:
        return f"{self.host}:{self.port}"

    def connect(self) -> pymysql.Connection:
        try:
            return pymysql.connect(host=self.host, port=self.port, user=self.user,
                                   password=self.password, connect_timeout=10,
                                   read_timeout=120, autocommit=True)
        except pymysql.err.MySQLError as exc:
            raise RestoreError(f"cannot connect to the target {self.name}: {exc}") from exc


@dataclass
class TargetState:
    binlog_pos: Position
    slave_pos: Position
    server_id: int
    schemas: list[str]
    connections: list[dict[str, Any]]  # SHOW ALL SLAVES STATUS


@dataclass
class Plan:
    """What a restore applies: the transactions after the target's position up to STOP."""

    stop: Position
    start: Position
    first: str | None = None  # the first GTID to apply
    total: int = 0
    server_ids: set[int] = field(default_factory=set)
    _seqs: dict[int, array[int]] = field(default_factory=dict)

    def applied(self, position: Position) -> int:
        """How many of the planned transactions POSITION holds."""
        return sum(bisect_right(seqs, position[domain].seq_no)
                   for domain, seqs in self._seqs.items() if domain in position)


@dataclass
class Applied:
    start: str  # the target's position before ('' for an empty server)
    first: str | None
    position: str  # the target's gtid_slave_pos after
    transactions: int
    seconds: float


def _pos(text: str | None) -> Position:
    return walstore.parse_position(text or "")


def _text(position: Position) -> str:
    return walstore.format_position(position)


def inspect_target(conn: pymysql.Connection) -> TargetState:
    with conn.cursor(pymysql.cursors.DictCursor) as cursor:
        cursor.execute("SELECT @@gtid_binlog_pos AS b, @@gtid_slave_pos AS s, "
                       "@@server_id AS id")
        row = cursor.fetchone() or {}
        cursor.execute("SELECT schema_name AS name FROM information_schema.schemata "
                       "WHERE schema_name NOT IN %s ORDER BY schema_name", (SYSTEM_SCHEMAS,))
        schemas = [str(r["name"]) for r in cursor.fetchall()]
        cursor.execute("SHOW ALL SLAVES STATUS")
        connections = list(cursor.fetchall())
    return TargetState(_pos(row.get("b")), _pos(row.get("s")), int(row.get("id") or 0),
                       schemas, connections)


def _is_ours(connection: dict[str, Any], source: AgentSource) -> bool:
    """The default connection to this agent: an interrupted restore's, left running."""
    return (connection.get("Connection_name", "") == ""
            and connection.get("Master_Host") == _master_host(source.host)
            and int(connection.get("Master_Port") or 0) == source.port)


def check_target(state: TargetState, target: TargetServer, source: AgentSource) -> None:
    """Refuse a target that is neither empty nor at a position of its own restore."""
    for connection in state.connections:
        if not _is_ours(connection, source):
            name = connection.get("Connection_name") or "the default connection"
            raise RestoreError(
                f"the target {target.name} replicates from {connection.get('Master_Host')}:"
                f"{connection.get('Master_Port')} ({name}); a restore target must be a plain "
                "server: nothing was changed")
    if state.binlog_pos and state.binlog_pos != state.slave_pos:
        raise RestoreError(
            f"the target {target.name} holds other GTIDs: its binlog has "
            f"{_text(state.binlog_pos)}, which it did not get by replication (its "
            f"gtid_slave_pos is {_text(state.slave_pos) or 'empty'}); restore into an empty "
            "server: nothing was changed")
    if not state.slave_pos and state.schemas:
        raise RestoreError(
            f"the target {target.name} already holds data (schemas: "
            f"{', '.join(state.schemas)}); restore into an empty server: nothing was changed")


class _PlanSink:
    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.start_seen: set[walstore.Gtid] = set()
        self._seqs: dict[int, list[int]] = {}

    def start_file(self, name: str) -> None:
        pass

    def event(self, raw: bytes) -> None:
        pass

    def transaction(self, gtid_text: str, raws: list[bytes]) -> None:
        gtid = walstore.Gtid.parse(gtid_text)
        held = self.plan.start.get(gtid.domain)
        if held is not None and gtid.seq_no <= held.seq_no:
            if gtid == held:
                self.start_seen.add(gtid)
            return
        stop = self.plan.stop.get(gtid.domain)
        if stop is not None and gtid.seq_no > stop.seq_no:
            return  # beyond the restore point in its domain (several domains)
        if self.plan.first is None:
            self.plan.first = gtid_text
        self.plan.total += 1
        self.plan.server_ids.add(gtid.server_id)
        self._seqs.setdefault(gtid.domain, []).append(gtid.seq_no)

    def seqs(self) -> dict[int, array[int]]:
        return {domain: array("q", sorted(seqs)) for domain, seqs in self._seqs.items()}


def plan_restore(source: AgentSource, start: Position, *, to_gtid: str | None,
                 to_time: int | None) -> Plan:
    """Read the agent's committed history up to the restore point; check START (the
    target's position) is a prefix of it; count what is left to apply."""
    stop = parse_gtids(to_gtid, "--to-gtid") if to_gtid else {}
    plan = Plan(stop=stop, start=dict(start))
    sink = _PlanSink(plan)
    reached = read_history(source, sink, to_gtid=to_gtid, to_time=to_time)
    if to_gtid is None:
        plan.stop = reached
        if not reached:
            raise RestoreError("no transaction of the committed history was committed by "
                               "--to-time; there is nothing to restore")
    plan._seqs = sink.seqs()
    missing = set(start.values()) - sink.start_seen
    if missing:
        text = _text(start)
        refusal = agent_refuses(source, text)
        if refusal is not None:
            raise RestoreError(
                f"the target holds other GTIDs: its position {text} is not in this "
                f"timeline's committed history (the agent said: {refusal}); restore into "
                "an empty server: nothing was changed")
        raise RestoreError(
            f"the target is already past the restore point {_text(plan.stop)}: it is at "
            f"{text}; restore into an empty server: nothing was changed")
    return plan


def covers(position: Position, stop: Position) -> bool:
    return walstore.covers(position, stop)


def _slave_status(cursor: pymysql.cursors.DictCursor) -> dict[str, Any]:
    cursor.execute("SHOW SLAVE STATUS")
    return cursor.fetchone() or {}


@contextlib.contextmanager
def _no_interrupts() -> Iterator[None]:
    """Ctrl-C and SIGTERM wait while the target is being stopped and reset."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def _halt(target: TargetServer) -> str | None:
    """STOP SLAVE; RESET SLAVE ALL on a fresh connection; the target's position, or None
    when the target cannot be reached."""
    log.info("binkeeper restore: stopping replication on the target %s (STOP SLAVE lets a "
             "transaction in progress finish or roll back, which can wait on a lock)",
             target.name)
    with _no_interrupts():
        try:
            conn = target.connect()
        except RestoreError:
            return None
        try:
            with conn.cursor() as cursor:
                for statement in ("STOP SLAVE", "RESET SLAVE ALL"):
                    try:
                        cursor.execute(statement)
                    except pymysql.err.OperationalError as exc:
                        log.warning("binkeeper restore: %s on the target: %s", statement, exc)
                cursor.execute("SELECT @@gtid_slave_pos")
                row = cursor.fetchone()
                return str(row[0]) if row else ""
        except pymysql.err.MySQLError:
            return None
        finally:
            conn.close()


def _where(position: str | None, plan: Plan) -> str:
    if position is None:
        return ("the target could not be reached to stop it; it may still be applying "
                "(SHOW SLAVE STATUS on it shows where)")
    done = plan.applied(_pos(position)) if position else 0
    return (f"the target is at GTID position {position or '(empty)'}, {done} of "
            f"{plan.total} transaction(s) applied")


RESUME = "run the same command again to resume from there"


def apply_restore(source: AgentSource, target: TargetServer, *, to_gtid: str | None = None,
                  to_time: int | None = None, progress: Progress | None = None,
                  stall_timeout: float = 600.0, poll_interval: float = 0.2,
                  on_plan: Callable[[Plan], None] | None = None) -> Applied:
    """Restore the agent's committed history up to TO_GTID or TO_TIME into TARGET."""
    conn = target.connect()
    try:
        try:
            state = inspect_target(conn)
        except pymysql.err.MySQLError as exc:
            raise RestoreError(f"cannot read the target {target.name}: {exc}") from exc
        check_target(state, target, source)
        try:
            plan = plan_restore(source, state.slave_pos, to_gtid=to_gtid, to_time=to_time)
        except pymysql.err.MySQLError as exc:
            raise RestoreError(f"cannot read from the agent {source.host}:{source.port}: "
                               f"{exc}") from exc
        if state.server_id in plan.server_ids:
            raise RestoreError(
                f"the target's server_id {state.server_id} wrote transactions of this "
                "history, and a replica skips events with its own server_id: start the "
                "target with another --server-id: nothing was changed")
        if on_plan is not None:
            on_plan(plan)
        started = time.monotonic()
        try:
            with conn.cursor(pymysql.cursors.DictCursor) as cursor:
                start = _take_over(cursor, state, plan)
                if plan.total == 0 or covers(_pos(start), plan.stop):
                    if state.connections:
                        cursor.execute("RESET SLAVE ALL")
                    return Applied(start, None, start, 0, 0.0)
                _start_replication(cursor, source, plan)
                position = _wait(cursor, target, plan, progress, stall_timeout, poll_interval)
                cursor.execute("STOP SLAVE")
                cursor.execute("RESET SLAVE ALL")
        except KeyboardInterrupt as exc:
            where = _where(_halt(target), plan)
            raise RestoreInterrupted(f"interrupted: {where}; {RESUME}") from exc
        except (pymysql.err.OperationalError, pymysql.err.InterfaceError) as exc:
            where = _where(_halt(target), plan)
            raise RestoreInterrupted(
                f"lost the connection to the target {target.name} ({exc}): {where}; "
                f"{RESUME}") from exc
        except pymysql.err.MySQLError as exc:
            where = _where(_halt(target), plan)
            raise RestoreError(f"the target {target.name} refused: {exc}; {where}") from exc
        return Applied(_text(state.slave_pos), plan.first, position,
                       plan.applied(_pos(position)), time.monotonic() - started)
    finally:
        conn.close()


def _take_over(cursor: pymysql.cursors.DictCursor, state: TargetState, plan: Plan) -> str:
    """Stop what a killed restore from this agent left running; the target's position,
    which must still be within the restore point."""
    if not state.connections:
        return _text(state.slave_pos)
    cursor.execute("STOP SLAVE")
    cursor.execute("SELECT @@gtid_slave_pos AS p")
    start = str((cursor.fetchone() or {}).get("p") or "")
    if not covers(plan.stop, _pos(start)):
        cursor.execute("RESET SLAVE ALL")
        raise RestoreError(f"the target is already past the restore point "
                           f"{_text(plan.stop)}: it is at {start} (a restore left running "
                           "went further); its replication was stopped and reset")
    return start


def _master_host(host: str) -> str:
    """MariaDB's client takes MASTER_HOST='localhost' for its Unix socket: the agent is
    reached over TCP, as the restore reached it."""
    return "127.0.0.1" if host == "localhost" else host


def _start_replication(cursor: pymysql.cursors.DictCursor, source: AgentSource,
                       plan: Plan) -> None:
    options = ""
    if source.ssl_ca:
        options = ", MASTER_SSL=1, MASTER_SSL_CA=%s, MASTER_SSL_VERIFY_SERVER_CERT=1"
    cursor.execute(
        f"CHANGE MASTER TO MASTER_HOST=%s, MASTER_PORT={int(source.port)}, "
        "MASTER_USER=%s, MASTER_PASSWORD=%s, MASTER_USE_GTID=slave_pos, "
        f"MASTER_CONNECT_RETRY=1{options}",
        (_master_host(source.host), source.user, source.password,
         *((source.ssl_ca,) if source.ssl_ca else ())))
    cursor.execute("START SLAVE UNTIL master_gtid_pos = %s", (_text(plan.stop),))


def _wait(cursor: pymysql.cursors.DictCursor, target: TargetServer, plan: Plan,
          progress: Progress | None, stall_timeout: float, poll_interval: float) -> str:
    """Poll until the target's gtid_slave_pos covers the restore point; returns it. Fails,
    after stopping and resetting replication, on a replication error or a stall."""
    last, moved = "", time.monotonic()
    while True:
        status = _slave_status(cursor)  # before the position: a stop seen here is final
        cursor.execute("SELECT @@gtid_slave_pos AS p")
        position = str((cursor.fetchone() or {}).get("p") or "")
        if progress is not None:
            progress(plan.applied(_pos(position)), plan.total, position)
        if covers(_pos(position), plan.stop):
            return position
        if status.get("Last_SQL_Errno"):
            where = _where(_halt(target), plan)
            raise RestoreError(
                f"the target failed to apply a transaction: Last_SQL_Error: "
                f"{status.get('Last_SQL_Error')!r}; {where}, replication settings cleared")
        if status.get("Last_IO_Errno"):
            where = _where(_halt(target), plan)
            raise RestoreInterrupted(
                f"the target lost the agent: Last_IO_Error: {status.get('Last_IO_Error')!r}; "
                f"{where}; once the agent is reachable, {RESUME}")
        if status.get("Slave_SQL_Running") != "Yes":
            where = _where(_halt(target), plan)
            raise RestoreInterrupted(
                f"replication on the target stopped before the restore point (STOP SLAVE "
                f"from elsewhere?): {where}; {RESUME}")
        now = time.monotonic()
        if position != last:
            last, moved = position, now
        elif now - moved > stall_timeout:
            states = (f"I/O thread: {status.get('Slave_IO_State')!r}, SQL thread: "
                      f"{status.get('Slave_SQL_Running_State')!r}")
            where = _where(_halt(target), plan)
            raise RestoreInterrupted(
                f"no progress for {stall_timeout:.0f} s ({states}): {where}; {RESUME}")
        time.sleep(poll_interval)
