"""The keeper: on every agent, keeps the server beside it in the role the newest committed
GROUP record gives it (docs/failover.md).

Built so far: a server that is not the recorded primary is kept read-only and replicating
from this agent's own replication port (`MASTER_USE_GTID=slave_pos`), so it only ever
receives quorum-committed history — operators configure no replication by hand. A server
holding GTIDs beyond the committed history is refused, with the GTIDs named, never reset.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pymysql
import trio

import walstore
from agent.config import Config
from agent.failover.group import errant_gtids
from agent.node.group_record import GroupRecord
from agent.node.handle import TimelineHandle

log = logging.getLogger("binkeeper.keeper")

INTERVAL = 0.5  # seconds between looks at the server while nothing changes
WATCH = 0.05  # seconds between looks at the newest GROUP record
SQL_TIMEOUT = 5  # seconds; read_only=ON may queue behind a commit waiting for its ACK


# MARIADB.md: a replica started --read-only=ON --init-rpl-role=SLAVE becomes the primary at
# runtime with these; its commits then wait for the agents' ACK and never fall back.
SEMI_SYNC = (
    "SET GLOBAL rpl_semi_sync_master_wait_point = 'AFTER_SYNC'",
    "SET GLOBAL rpl_semi_sync_master_wait_no_slave = ON",
    "SET GLOBAL rpl_semi_sync_master_timeout = 4294967295",
    "SET GLOBAL rpl_semi_sync_master_enabled = ON",
)
PROMOTE = ("STOP SLAVE", "RESET SLAVE ALL", *SEMI_SYNC, "SET GLOBAL read_only = OFF")
SEMI_SYNC_ON = ("SELECT @@rpl_semi_sync_master_enabled = 1 "
                "AND @@rpl_semi_sync_master_wait_no_slave = 1 "
                "AND @@rpl_semi_sync_master_timeout = 4294967295 "
                "AND @@rpl_semi_sync_master_wait_point = 'AFTER_SYNC' AS ok")
ER_LOCK_WAIT_TIMEOUT = 1205


class KeeperRefused(Exception):
    """This server cannot be made a replica safely; the message says why."""


class KeeperWaiting(Exception):
    """This agent cannot judge the server yet (its own log is behind); tried again."""


@dataclass
class KeeperStatus:
    role: str = "unknown"  # primary, replica, refused, down
    error: str | None = None
    changes: int = 0  # times replication was (re)configured

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class ServerKeeper:
    def __init__(self, config: Config, timeline: TimelineHandle) -> None:
        self.config = config
        self.timeline = timeline
        self.status = KeeperStatus()
        self._limiter = trio.CapacityLimiter(1)

    async def run(self) -> None:
        mariadb, listen = self.config.mariadb, self.config.listen_mysql
        if not mariadb.enabled or listen is None:
            return
        acted_on: GroupRecord | None = None
        acted_at = -INTERVAL
        while True:
            # Look at the record often (a dictionary lookup) but at the server only when the
            # record changed or INTERVAL passed: a decision is acted on within WATCH.
            await trio.sleep(WATCH)
            record = self.timeline.group_record()
            if record is None:
                continue
            now = trio.current_time()
            if record == acted_on and now - acted_at < INTERVAL:
                continue
            acted_on, acted_at = record, now
            await self._keep(record)

    async def _keep(self, record: GroupRecord) -> None:
        mariadb, listen = self.config.mariadb, self.config.listen_mysql
        assert listen is not None
        if not self.timeline.record_is_current():
            # This agent has just started (or its leader changed) and has not caught up: the
            # newest GROUP record on its disk may have been superseded long ago — acting on
            # it made a replaced primary writable again after a whole-host restart.
            self._set_waiting("this agent has not caught up with its leader yet: the newest "
                              "record here may be stale")
            return
        if (record.primary.host, record.primary.port) == (mariadb.host, mariadb.port):
            if record.primary.node == self.config.node_id:
                await self._keep_primary(record)
            else:  # agents sharing one server (tests): the one named keeps it
                self.status.role, self.status.error = "primary", None
            return
        try:
            changed = await trio.to_thread.run_sync(
                self.keep_replica, record, self.timeline.gtid_known,
                self.timeline.past_primary_server_ids(), limiter=self._limiter)
        except KeeperRefused as exc:
            self._set_error("refused", str(exc))
        except KeeperWaiting as exc:
            self._set_waiting(str(exc))
        except pymysql.err.MySQLError as exc:
            self._set_error("down", f"{exc.args[0]}: {exc.args[-1]}" if exc.args
                            else str(exc))
        else:
            if changed:
                self.status.changes += 1
                log.info("%s:%d replicates from this agent (%s:%d), committed history only",
                         mariadb.host, mariadb.port, listen.host, listen.port)
            self.status.role, self.status.error = "replica", None

    async def _keep_primary(self, record: GroupRecord) -> None:
        try:
            state = await trio.to_thread.run_sync(
                self.keep_primary, record, self.timeline.committed_gtid(),
                self.timeline.gtid_known, limiter=self._limiter)
            if state == "catching up" and self.config.listen_mysql is not None:
                # Not fed by anyone yet (e.g. the primary itself restarted, its tail cut,
                # and no replica to fail over to): it catches up from this agent first.
                await trio.to_thread.run_sync(
                    self.keep_replica, record, self.timeline.gtid_known,
                    self.timeline.past_primary_server_ids(), limiter=self._limiter)
        except KeeperRefused as exc:
            self._set_error("refused", str(exc))
            return
        except KeeperWaiting as exc:
            self._set_waiting(str(exc))
            return
        except pymysql.err.MySQLError as exc:
            self._set_error("down", f"{exc.args[0]}: {exc.args[-1]}" if exc.args
                            else str(exc))
            return
        if state == "fenced":
            self.status.role, self.status.error = "handing over", None
            return
        if state == "promoted":
            self.status.changes += 1
            log.warning("promoted the server beside this agent (%s:%d) to primary, epoch %d "
                        "(%s): writable, semi-sync that never falls back",
                        record.primary.host, record.primary.port, record.epoch, record.reason)
        self.status.role = "primary" if state != "catching up" else "catching up"
        self.status.error = None

    @staticmethod
    def _refuse_errant(cursor: Any, known: Callable[[str], bool | None],
                       record: GroupRecord) -> None:
        cursor.execute("SELECT @@gtid_binlog_state AS state")
        state = (cursor.fetchone() or {}).get("state") or ""
        errant = errant_gtids(state, lambda g: known(g) is not False, earlier=True)
        if errant:
            raise KeeperRefused(f"it holds {errant}, which the quorum never committed; not "
                                f"promoting it (epoch {record.epoch}), not resetting it")

    def keep_primary(self, record: GroupRecord, committed: str,
                     known: Callable[[str], bool | None]) -> str:
        """Blocking: during a switchover (RECORD.handover_to), make it read-only: "fenced".
        Otherwise, once the server has applied everything committed (COMMITTED, the
        quorum's position now — not only the record's: a primary that restarted may have
        had committed transactions cut, and must not write new ones in their place), make
        it the primary. "primary" (it was), "promoted", or "catching up"."""
        mariadb = self.config.mariadb
        conn = pymysql.connect(host=mariadb.host, port=mariadb.port, user=mariadb.user,
                               password=mariadb.password, connect_timeout=SQL_TIMEOUT,
                               read_timeout=SQL_TIMEOUT * 2, autocommit=True)
        try:
            with conn.cursor(pymysql.cursors.DictCursor) as cursor:
                cursor.execute("SELECT @@read_only AS ro, @@gtid_binlog_pos AS bin, "
                               "@@gtid_slave_pos AS slave")
                row = cursor.fetchone()
                assert row is not None
                if record.handover_to is not None:
                    # A switchover: read-only now, so nothing new is written; commits already
                    # waiting still get their ACKs (the source tails it until the next record)
                    # and SET read_only waits for them (MARIADB.md), never KILLs them.
                    if int(row["ro"]):
                        return "fenced"
                    cursor.execute("SET SESSION lock_wait_timeout = %s", (SQL_TIMEOUT,))
                    cursor.execute("SET GLOBAL read_only = ON")
                    log.warning("switchover to %s: the server beside this agent is read-only "
                                "and hands over once its history is committed",
                                record.handover_to)
                    return "fenced"
                if not int(row["ro"]):
                    # (an adopted primary, writable already: never without the settings that
                    # never fall back — turning them on answers no one OK)
                    cursor.execute(SEMI_SYNC_ON)
                    if not int((cursor.fetchone() or {}).get("ok") or 0):
                        for statement in SEMI_SYNC:
                            cursor.execute(statement)
                        log.warning("the primary beside this agent had no semi-sync settings "
                                    "that never fall back: set them")
                    return "primary"
                if record.ready:
                    # Named ready yet read-only: it restarted. The controller records that
                    # (reason restarted, not ready) and only that record promotes it again;
                    # until then it is only fed. (A ready record read by an agent that is
                    # behind may name a server replaced long ago.)
                    return "catching up"
                held = walstore.parse_position(row["bin"] or row["slave"] or "")
                needed = walstore.parse_position(committed or record.committed_gtid)
                if not walstore.covers(held, needed):
                    return "catching up"  # from this agent, which serves committed history
                # Positions compare sequence numbers only: a write around the agents (root
                # bypasses read_only) would pass them, and the source would then take it into
                # the log. Checked by exact GTID before, and again once commits would wait
                # for an ACK (semi-sync on) but before anyone but root can write.
                # (Not at the adoption: the adopted server's history is what the log will
                # read from it.)
                adopting = record.reason == "adopted"
                if not adopting:
                    self._refuse_errant(cursor, known, record)
                for statement in PROMOTE[:-1]:
                    cursor.execute(statement)
                if not adopting:
                    self._refuse_errant(cursor, known, record)
                cursor.execute(PROMOTE[-1])
                return "promoted"
        finally:
            conn.close()

    def _set_waiting(self, why: str) -> None:
        if why != self.status.error:
            log.info("the server beside this agent: %s", why)
        self.status.role, self.status.error = "catching up", why

    def _set_error(self, role: str, error: str) -> None:
        if error != self.status.error:
            log.error("the server beside this agent: %s", error)
        self.status.role, self.status.error = role, error

    def keep_replica(self, record: GroupRecord, known: Callable[[str], bool | None],
                     primary_ids: frozenset[int] = frozenset()) -> bool:
        """Blocking: make the server a read-only replica of this agent. True when
        replication was (re)configured, False when it already was. KNOWN says whether a GTID
        is committed history (True), cannot be (False) or cannot be told yet (None: this
        agent is behind)."""
        mariadb, listen = self.config.mariadb, self.config.listen_mysql
        assert listen is not None
        conn = pymysql.connect(host=mariadb.host, port=mariadb.port, user=mariadb.user,
                               password=mariadb.password, connect_timeout=SQL_TIMEOUT,
                               read_timeout=SQL_TIMEOUT * 2, autocommit=True)
        try:
            with conn.cursor(pymysql.cursors.DictCursor) as cursor:
                cursor.execute("SET SESSION lock_wait_timeout = %s", (SQL_TIMEOUT,))
                cursor.execute("SELECT @@read_only AS ro, @@gtid_binlog_pos AS bin, "
                               "@@gtid_binlog_state AS state, "
                               "@@gtid_slave_pos AS slave, @@server_id AS id, "
                               "@@rpl_semi_sync_master_enabled AS semi")
                row = cursor.fetchone()
                assert row is not None
                # Anything in its binlog the committed history lacks was written around the
                # agents (a privileged client, a KILLed ACK wait): named, never replicated over
                # or reset. Everything it applied from this agent is committed.
                errant = errant_gtids(row["state"] or "", lambda g: known(g) is not False,
                                      earlier=True)
                if errant:
                    raise KeeperRefused(
                        f"it holds {errant}, which the quorum never committed (the primary "
                        f"is {record.primary.node}'s); not replicating it, not resetting it")
                unknown = errant_gtids(row["bin"] or "", lambda g: known(g) is True)
                if unknown:  # this agent restarted or lags: judged once it has caught up
                    raise KeeperWaiting(f"it holds {unknown}, not yet committed in this "
                                        "agent's log; waiting for this agent to catch up")
                if not int(row["ro"]):
                    try:
                        cursor.execute("SET GLOBAL read_only = ON")
                    except pymysql.err.OperationalError as exc:
                        if exc.args[0] != ER_LOCK_WAIT_TIMEOUT:
                            raise
                        # It queues behind a commit waiting for an ACK no agent will send
                        # (committed by the quorum, its ACK lost to a partition): never
                        # KILLed (that answers OK), cut by a restart (MARIADB.md).
                        raise KeeperRefused(
                            "read_only=ON waits behind a commit waiting for its ACK; restart "
                            "the server (--init-rpl-role=SLAVE --read-only=ON cuts it) and it "
                            "rejoins") from exc
                if int(row["semi"]):
                    # A former primary: with semi-sync on, every transaction it applies as a
                    # replica (log_slave_updates) would wait for an ACK nobody sends. No
                    # commit waits now — a waiting one is in its binlog and was refused just
                    # above as never committed — so turning it off answers no one OK.
                    cursor.execute("SET GLOBAL rpl_semi_sync_master_enabled = OFF")
                    cursor.execute("SELECT @@gtid_binlog_pos AS bin")
                    again = cursor.fetchone()
                    late = errant_gtids((again or {}).get("bin") or "",
                                        lambda g: known(g) is True)
                    if late:  # written in the instant between the check and OFF: named
                        raise KeeperRefused(
                            f"it holds {late}, written around the agents while it was being "
                            f"made a replica; not replicating it, not resetting it")
                cursor.execute("SHOW SLAVE STATUS")
                slave = cursor.fetchone()
                if _replicating_from(slave, listen.host, listen.port, self.config):
                    return False
                cursor.execute("STOP SLAVE")
                if int(row["id"]) in primary_ids:
                    # It was a primary: transactions it wrote carry its server_id, and a
                    # replica drops events with its own server_id — those the quorum
                    # committed but its restart cut would be skipped without a word
                    # (MARIADB.md). Replicating under another id, it applies them.
                    new_id = rejoin_server_id(self.config.node_id, record.epoch)
                    cursor.execute("SET GLOBAL server_id = %s", (new_id,))
                    log.warning("server beside this agent was a primary (server_id %s): it "
                                "replicates as server_id %d from now on", row["id"], new_id)
                if row["bin"] and not walstore.covers(
                        walstore.parse_position(row["slave"] or ""),
                        walstore.parse_position(row["bin"])):
                    # Its own binlog is ahead of what it applied as a replica (it was a
                    # primary): start after everything it holds, all of it committed.
                    cursor.execute("SET GLOBAL gtid_slave_pos = @@gtid_binlog_pos")
                replication = self.config.replication
                cursor.execute(
                    "CHANGE MASTER TO MASTER_HOST=%s, MASTER_PORT=%s, MASTER_USER=%s, "
                    "MASTER_PASSWORD=%s, MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1, "
                    "MASTER_HEARTBEAT_PERIOD=1",
                    (listen.host, listen.port, replication.user, replication.password))
                cursor.execute("START SLAVE")
                return True
        finally:
            conn.close()


def rejoin_server_id(node_id: str, epoch: int) -> int:
    """A server_id for a former primary: outside what operators pick and what agents use as
    replicas (config.derived_server_id), one per agent and decision."""
    return 3_000_000_000 + zlib.crc32(f"{node_id}/{epoch}".encode()) % 1_000_000_000


def _replicating_from(slave: dict[str, Any] | None, host: str, port: int,
                      config: Config) -> bool:
    if not slave:
        return False
    return (slave.get("Master_Host") == host and int(slave.get("Master_Port") or 0) == port
            and slave.get("Master_User") == config.replication.user
            and slave.get("Slave_SQL_Running") == "Yes"
            and slave.get("Slave_IO_Running") in ("Yes", "Connecting"))
