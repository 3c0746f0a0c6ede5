"""A failover group on this machine: N throwaway MariaDB servers, each with an agent beside
it running as its own OS process, for `binkeeper demo` and the failover benchmark.

The servers run with the options DESIGN.md gives every server of a group (log_bin,
log_slave_updates, ROW, CRC32, gtid_strict_mode, their own server_id, `--init-rpl-role=SLAVE
--read-only=ON`): none starts writable; the agents make the most advanced one (server 1,
which gets the schema first) the primary and the others replicas. Every restart is the
same start, so a crashed primary comes back fenced with its unacknowledged tail cut.
The schema and an application user without READ_ONLY ADMIN (read_only stops its writes,
unlike root's: MARIADB.md) are created on server 1 before semi-sync is switched on — a
commit would wait for an ACK no agent gives yet — so they replicate to every server.

Every wait polls a condition with a deadline; a wait that times out raises GroupError
with the tail of each agent's log.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pymysql

import walstore
from agent.harness import processes
from agent.harness.agent_process import AgentProcess
from agent.harness.local_mariadb import LocalMariaDB
from agent.harness.ports import free_port

T = TypeVar("T")

POLL = 0.05  # seconds between two looks at a condition
REJOIN_ARGS = ("--init-rpl-role=SLAVE", "--read-only=ON")
APP_USER = "app"
APP_PASSWORD = "app-s3cret"
# The semi-sync primary settings that never fall back to asynchronous (MARIADB.md).
SEMI_SYNC = (
    "SET GLOBAL rpl_semi_sync_master_wait_point = 'AFTER_SYNC'",
    "SET GLOBAL rpl_semi_sync_master_wait_no_slave = ON",
    "SET GLOBAL rpl_semi_sync_master_timeout = 4294967295",
    "SET GLOBAL rpl_semi_sync_master_enabled = ON",
)


class GroupError(RuntimeError):
    """A wait timed out or the group cannot be started; the message says what and how the
    agents saw it."""


def create_ledger(db: LocalMariaDB) -> None:
    """The default schema: one table of unique ids, one row per transaction."""
    db.execute("CREATE DATABASE IF NOT EXISTS w",
               "CREATE TABLE IF NOT EXISTS w.ledger (id BIGINT PRIMARY KEY) ENGINE=InnoDB")


@dataclass(eq=False)
class Member:
    """One server and the agent beside it."""

    node_id: str
    server: LocalMariaDB
    agent: AgentProcess

    @property
    def address(self) -> tuple[str, int]:
        return (self.server.host, self.server.port)


class FailoverGroup:
    def __init__(self, root: Path, size: int = 3, *, database: str = "w",
                 privileges: str = "SELECT, INSERT",
                 primary_timeout_ms: int | None = None) -> None:
        """DATABASE.*: what the application user may touch, with PRIVILEGES."""
        self.root = root
        self.database = database
        self.privileges = privileges
        self.primary_timeout_ms = primary_timeout_ms
        self.members: dict[str, Member] = {}
        ids = [f"a{i + 1}" for i in range(size)]
        peer_ports = {node: free_port() for node in ids}
        for index, node in enumerate(ids):
            server = LocalMariaDB(root / f"server{index + 1}", server_id=index + 1,
                                  extra_args=list(REJOIN_ARGS))
            agent = AgentProcess(
                node_id=node, root=root / "agents", peer_port=peer_ports[node],
                http_port=free_port(), mysql_port=free_port(), server_port=0,
                peers={other: peer_ports[other] for other in ids if other != node},
                primary_timeout_ms=primary_timeout_ms)
            self.members[node] = Member(node, server, agent)

    # ---- lifecycle --------------------------------------------------------------------------

    def start(self, prepare: Callable[[LocalMariaDB], None] = create_ledger,
              timeout: float = 60.0) -> None:
        """Servers, schema and application user, semi-sync, then the agents; returns once
        the agents have recorded server 1 as the ready primary and the leader tails it."""
        (self.root / "agents").mkdir(parents=True, exist_ok=True)
        for member in self.members.values():
            member.server.start()
            member.agent.server_port = member.server.port
            member.agent.write_config()
        first = next(iter(self.members.values())).server
        prepare(first)
        first.execute(
            f"CREATE USER IF NOT EXISTS '{APP_USER}'@'%' IDENTIFIED BY '{APP_PASSWORD}'",
            f"GRANT {self.privileges} ON {self.database}.* TO '{APP_USER}'@'%'")
        first.execute(*SEMI_SYNC)
        for member in self.members.values():
            member.agent.start()
        self.wait_for(lambda: self.primary() == first_address(self), timeout,
                      "the agents to record server 1 as the primary")
        self.wait_for(self.leader_tails, timeout, "the leader to tail the primary")

    def close(self) -> None:
        for member in self.members.values():
            member.agent.stop()
        for member in self.members.values():
            member.server.kill()

    def cleanup(self) -> None:
        self.close()
        shutil.rmtree(self.root, ignore_errors=True)

    # ---- what the agents say ----------------------------------------------------------------

    def timelines(self) -> dict[str, dict[str, Any] | None]:
        """Each agent's timeline status (None: killed or not answering)."""
        return {node: member.agent.timeline(timeout=1.0)
                for node, member in self.members.items()}

    def primary(self) -> tuple[str, int] | None:
        """HOST, PORT of the ready primary as the first live agent that answers says, as
        `binkeeper primary` would print it; None while there is none."""
        for member in self.members.values():
            timeline = member.agent.timeline(timeout=0.5)
            if timeline is None:
                continue
            shown = timeline.get("primary")
            return (str(shown["host"]), int(shown["port"])) if shown else None
        return None

    def member_at(self, address: tuple[str, int]) -> Member:
        return next(m for m in self.members.values() if m.address == address)

    def primary_member(self) -> Member | None:
        where = self.primary()
        return self.member_at(where) if where is not None else None

    def leader(self) -> str | None:
        """The agent that says it leads (the first found among live ones)."""
        for node, timeline in self.timelines().items():
            if timeline is not None and timeline.get("role") == "leader":
                return node
        return None

    def leader_timeline(self) -> dict[str, Any] | None:
        leader = self.leader()
        return self.members[leader].agent.timeline() if leader is not None else None

    def leader_tails(self) -> bool:
        timeline = self.leader_timeline() or {}
        return bool((timeline.get("source") or {}).get("connected"))

    def committed_gtid(self) -> str:
        """The leader's committed GTID position ('' when none or no leader)."""
        return str((self.leader_timeline() or {}).get("committed_gtid") or "")

    def logs(self, lines: int = 25) -> str:
        return "\n".join(f"--- agent {node} ({m.agent.log_path}) ---\n{m.agent.log_tail(lines)}"
                         for node, m in self.members.items())

    # ---- faults -------------------------------------------------------------------------------

    def kill_server(self, node: str) -> float:
        """kill -9 of NODE's server; returns time.monotonic() just before the signal."""
        at = time.monotonic()
        self.members[node].server.kill()
        return at

    def restart_server(self, node: str) -> None:
        """Start NODE's (dead or stopped) server again as every restart of a group's server
        starts: fenced, its never-acknowledged tail cut."""
        server = self.members[node].server
        server.extra_args = [a for a in server.extra_args if a not in REJOIN_ARGS
                             and not a.startswith("--read-only")] + list(REJOIN_ARGS)
        server.restart()

    def kill_agent(self, node: str) -> float:
        at = time.monotonic()
        self.members[node].agent.kill()
        return at

    def start_agent(self, node: str) -> None:
        self.members[node].agent.start()

    # ---- waits --------------------------------------------------------------------------------

    def wait_for(self, predicate: Callable[[], T | None], timeout: float, what: str,
                 poll: float = POLL) -> T:
        """Poll PREDICATE until it returns something truthy, which is returned; GroupError
        naming WHAT after TIMEOUT seconds."""
        return processes.wait_for(predicate, timeout, what, poll, GroupError, self.logs)

    def wait_new_primary(self, old: tuple[str, int], timeout: float = 60.0) -> tuple[str, int]:
        """The ready primary the agents name once it is not OLD."""
        def new() -> tuple[str, int] | None:
            where = self.primary()
            return where if where is not None and where != old else None

        return self.wait_for(new, timeout, f"a primary other than {old[0]}:{old[1]}",
                             poll=0.01)

    def gtid_binlog_pos(self, node: str) -> str | None:
        """NODE's server's @@gtid_binlog_pos, None while it does not answer."""
        try:
            return self.members[node].server.variable("gtid_binlog_pos")
        except pymysql.err.MySQLError:
            return None

    def caught_up(self, node: str, target: str) -> bool:
        """NODE's server is a live replica whose binlog holds at least TARGET (a GTID
        position). Under load the primary moves on: TARGET is where it was."""
        server = self.members[node].server
        if not server.alive:
            return False
        try:
            read_only, held = server.query("SELECT @@read_only, @@gtid_binlog_pos")[0]
            status = server.slave_status()
        except pymysql.err.MySQLError:
            return False
        return (int(read_only) == 1 and status.get("Slave_SQL_Running") == "Yes"
                and walstore.covers(walstore.parse_position(str(held or "")),
                                    walstore.parse_position(target)))

    def wait_replicas_caught_up(self, timeout: float = 60.0) -> None:
        """Every server but the primary replicates and holds what the primary held when
        this began (under load, a moving primary cannot be met exactly)."""
        primary = self.wait_for(self.primary_member, timeout, "a ready primary")
        target = self.wait_for(lambda: self.gtid_binlog_pos(primary.node_id), timeout,
                               "the primary's GTID position")
        replicas = [node for node in self.members if node != primary.node_id]
        self.wait_for(lambda: all(self.caught_up(node, target) for node in replicas), timeout,
                      f"{', '.join(replicas)}'s servers to replicate and reach {target}")
        # and the leader's controller has probed each of them since: a failover may pick it
        self.wait_for(self.leader_sees_all_up, timeout, "the leader to see every server up")

    def leader_sees_all_up(self) -> bool:
        servers = (self.leader_timeline() or {}).get("servers") or []
        return len(servers) == len(self.members) and all(
            s.get("role") in ("primary", "replica") for s in servers)

    def wait_converged(self, timeout: float = 60.0) -> str:
        """With no writer running: every server at exactly the primary's GTID position and
        the leader's committed GTID equal to it. Returns that position."""
        primary = self.wait_for(self.primary_member, timeout, "a ready primary")

        def same() -> str | None:
            target = self.gtid_binlog_pos(primary.node_id)
            if not target or self.committed_gtid() != target:
                return None
            return target if all(self.gtid_binlog_pos(n) == target
                                 for n in self.members) else None

        return self.wait_for(same, timeout, "every server at the primary's GTID position")

    # ---- clients --------------------------------------------------------------------------------

    def app_connect(self, address: tuple[str, int], timeout: float = 30.0,
                    database: str | None = None) -> pymysql.Connection:
        """A connection as the application user (no READ_ONLY ADMIN)."""
        return pymysql.connect(host=address[0], port=address[1], user=APP_USER,
                               password=APP_PASSWORD, database=database, autocommit=True,
                               connect_timeout=2, read_timeout=timeout, write_timeout=timeout)


def first_address(group: FailoverGroup) -> tuple[str, int]:
    return next(iter(group.members.values())).address
