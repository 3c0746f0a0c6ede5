"""A replication group for failover tests: three real servers, an agent beside each, a
writer that follows `binkeeper primary`, and the checks a Jepsen-style history needs.

Server 1 starts writable (the primary the agents adopt), the others `--read-only=ON`; a
server that comes back after a kill -9 starts `--init-rpl-role=SLAVE --read-only=ON` as
DESIGN.md asks of every server of a group (`restart_fenced`). The binlog is read from the
files with `mariadb-binlog`, never with SHOW BINLOG EVENTS or SHOW BINARY LOGS, which hang
while two commit groups wait for an ACK (seen on 10.11.19).
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pymysql

import walstore
from agent.harness.local_mariadb import LocalMariaDB
from agent.mariadb.binaries import find_binary
from tests.mariadb.test_semisync import enable_semi_sync
from tests.support.cluster import Cluster, wait_until

FENCED_ARGS = ["--init-rpl-role=SLAVE", "--read-only=ON"]
APP_USER, APP_PASSWORD = "app", "app-pw"  # INSERT, SELECT on w.*: no READ_ONLY ADMIN
SEMI_SYNC_WAIT = "Waiting for semi-sync ACK from slave"


def primary_of(cluster: Cluster, ask: tuple[str, ...] | None = None
               ) -> tuple[str, int] | None:
    """What `binkeeper primary` prints, asked of the live agents (those named in ASK) in
    turn: the first that names one."""
    for node, agent in cluster.agents.items():
        if not agent.alive or (ask is not None and node not in ask):
            continue
        shown = subprocess.run([sys.executable, "-m", "agent", "primary", "--url", agent.url],
                               capture_output=True, text=True, timeout=30)
        if shown.returncode == 0:
            host, _, port = shown.stdout.strip().rpartition(":")
            return host, int(port)
    return None


def leader_status(cluster: Cluster) -> dict[str, Any]:
    """The leader's timeline status ({} while there is no agreed leader)."""
    leader = cluster.leader()
    return (cluster.agents[leader].timeline() or {}) if leader else {}


def recorded_primary(cluster: Cluster) -> tuple[str, int] | None:
    """The ready primary in the leader's status (what `binkeeper primary` prints there),
    without a process per look."""
    primary = leader_status(cluster).get("primary")
    return (primary["host"], int(primary["port"])) if primary else None


def keeper(cluster: Cluster, node: str) -> dict[str, Any]:
    """The keeper status of NODE's agent ({} when it does not answer)."""
    status: dict[str, Any] = (cluster.agents[node].timeline() or {}).get("keeper") or {}
    return status


class Writer:
    """Unique ids, one per transaction, as USER; every commit that returned is recorded in
    `acked`, every id sent in `attempted` (a commit that failed may or may not be there)."""

    def __init__(self, cluster: Cluster, user: str = "root", password: str = "", *,
                 ask: tuple[str, ...] | None = None, first_id: int = 1,
                 read_timeout: int = 10) -> None:
        """ASK: the agents asked where the primary is (all by default); READ_TIMEOUT:
        seconds before a commit that does not return counts as failed (outcome unknown)."""
        self.cluster = cluster
        self.user, self.password = user, password
        self.ask, self.first_id, self.read_timeout = ask, first_id, read_timeout
        self.acked: list[int] = []
        self.attempted: list[int] = []
        self.acked_on: dict[tuple[str, int], int] = {}  # commits acknowledged per server
        self.stop = threading.Event()
        self._hold = threading.Event()  # pause() asks the writer to stop between commits
        self._idle = threading.Event()  # ... and it says it has
        self.errors = 0
        self.last_error = ""
        self._thread = threading.Thread(target=self.run, daemon=True, name="writer")

    def start(self) -> None:
        self._thread.start()

    def finish(self, timeout: float = 30) -> None:
        self.stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
            assert not self._thread.is_alive(), "the writer did not stop"

    def pause(self, timeout: float = 30) -> None:
        """Blocking: returns once the writer is between commits, and keeps it there."""
        self._hold.set()
        assert self._idle.wait(timeout), "the writer did not pause"

    def resume(self) -> None:
        self._idle.clear()
        self._hold.clear()

    def run(self) -> None:
        next_id = self.first_id - 1
        conn: pymysql.Connection | None = None
        where: tuple[str, int] | None = None
        while not self.stop.is_set():
            if self._hold.is_set():
                self._idle.set()
                time.sleep(0.01)
                continue
            try:
                if conn is None:
                    where = primary_of(self.cluster, self.ask)
                    if where is None:
                        time.sleep(0.05)
                        continue
                    conn = pymysql.connect(host=where[0], port=where[1], user=self.user,
                                           password=self.password, autocommit=True,
                                           connect_timeout=2,
                                           read_timeout=self.read_timeout,
                                           write_timeout=self.read_timeout)
                next_id += 1
                self.attempted.append(next_id)
                with conn.cursor() as cursor:
                    cursor.execute("INSERT INTO w.t VALUES (%s)", (next_id,))
                self.acked.append(next_id)
                assert where is not None
                self.acked_on[where] = self.acked_on.get(where, 0) + 1
            except pymysql.err.MySQLError as exc:
                self.errors += 1
                self.last_error = repr(exc)
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(0.05)
        if conn is not None:
            conn.close()


async def more_commits(writer: Writer, count: int, cluster: Cluster, where: str,
                       timeout: float = 60) -> None:
    """Wait until the writer has COUNT more commits acknowledged (WHERE says on what)."""
    mark = len(writer.acked)
    await wait_until(lambda: len(writer.acked) >= mark + count, timeout,
                     f"{count} more commits {where}", cluster.logs)


def create_schema(primary: LocalMariaDB, app_user: bool = False) -> None:
    """The table the writer fills, and the writer's user when APP_USER: created before
    semi-sync is on (no agent acknowledges yet), replicated to every server by the agents."""
    primary.query("CREATE DATABASE w")
    primary.query("CREATE TABLE w.t (id BIGINT PRIMARY KEY) ENGINE=InnoDB")
    if app_user:
        primary.query(f"CREATE USER '{APP_USER}'@'%' IDENTIFIED BY '{APP_PASSWORD}'")
        primary.query(f"GRANT INSERT, SELECT ON w.* TO '{APP_USER}'@'%'")


async def start_group(primary: LocalMariaDB, cluster: Cluster, app_user: bool = False,
                      address: tuple[str, int] | None = None) -> None:
    """Schema, semi-sync, then the agents, until they have recorded PRIMARY (at ADDRESS, the
    one its agent advertises, when that is not its own port)."""
    create_schema(primary, app_user)
    enable_semi_sync(primary)
    cluster.start()
    address = address or ("127.0.0.1", primary.port)
    await wait_until(lambda: primary_of(cluster) == address, 30,
                     "the primary to be recorded", cluster.logs)


def three_servers(tmp_path: Path) -> dict[str, LocalMariaDB]:
    """Three servers started as every server of a group is (DESIGN.md): read-only, fenced
    on restart. The agents make the most advanced one (a1's, which gets the schema first)
    the primary."""
    return {node: LocalMariaDB(tmp_path / f"s{n}", server_id=n,
                               extra_args=list(FENCED_ARGS)).start()
            for n, node in enumerate(("a1", "a2", "a3"), start=1)}


def agents_beside(servers: dict[str, LocalMariaDB], tmp_path: Path,
                  mariadb_port: dict[str, int] | None = None) -> Cluster:
    """An agent beside each server, each serving replicas. MARIADB_PORT: where an agent
    reaches its server when not directly (through a FaultProxy)."""
    ports = {n: db.port for n, db in servers.items()} | (mariadb_port or {})
    return Cluster(tmp_path / "agents", len(servers), use_proxies=False, serve_replicas=True,
                   mariadb_port=ports)


def group_of_three(tmp_path: Path) -> tuple[dict[str, LocalMariaDB], Cluster]:
    """Three servers (three_servers) and an agent beside each, each serving replicas."""
    servers = three_servers(tmp_path)
    return servers, agents_beside(servers, tmp_path)


def restart_fenced(db: LocalMariaDB) -> None:
    """Back after a crash the way every server of a group starts (DESIGN.md): read-only,
    its never-acknowledged binlog tail cut."""
    for arg in FENCED_ARGS:
        if arg not in db.extra_args:
            db.extra_args.append(arg)
    db.restart()


def ids(db: LocalMariaDB) -> list[int]:
    return [int(row[0]) for row in db.query("SELECT id FROM w.t ORDER BY id")]


def server_at(servers: dict[str, LocalMariaDB], address: tuple[str, int]) -> LocalMariaDB:
    return next(db for db in servers.values() if (db.host, db.port) == address)


def covers(held: str, needed: str) -> bool:
    """GTID position HELD includes everything of NEEDED (per domain, by sequence number)."""
    return walstore.covers(walstore.parse_position(held), walstore.parse_position(needed))


def binlog_gtids(db: LocalMariaDB) -> list[str]:
    """Every GTID in DB's binlog files, in order."""
    return [gtid for gtid, _statement in binlog_transactions(db)]


def binlog_transactions(db: LocalMariaDB) -> list[tuple[str, str]]:
    """(GTID, the statement annotated with its row events, '' when none) of every
    transaction in DB's binlog files, in order, read from the files with `mariadb-binlog`:
    SHOW BINLOG EVENTS (like SHOW BINARY LOGS) hangs while a second commit group is
    queued behind one waiting for its ACK (seen on 10.11.19)."""
    files = [str(path) for path in db.binlog_files()]
    dumped = subprocess.run([find_binary("mariadb-binlog"), *files], capture_output=True,
                            text=True, timeout=60, check=True)
    found: list[tuple[str, str]] = []
    for line in dumped.stdout.splitlines():
        if (gtid := _GTID_EVENT.search(line)) is not None:
            found.append((gtid.group(1), ""))
        elif line.startswith("#Q> ") and found and not found[-1][1]:
            found[-1] = (found[-1][0], line[4:])
    return found


_GTID_EVENT = re.compile(r"\tGTID (\d+-\d+-\d+)\b")


def committed_wal_gtids(cluster: Cluster, node: str) -> set[str]:
    """The GTIDs NODE's agent holds at or below its commit LSN, from `binkeeper wal dump`
    (offline: the agent must be stopped)."""
    dumped = subprocess.run([sys.executable, "-m", "agent", "wal", "dump",
                             str(cluster.agents[node].data_dir)],
                            capture_output=True, text=True, timeout=60, check=True)
    commit_lsn, gtids = -1, set()
    for line in dumped.stdout.splitlines():
        if line.startswith("# ") and "commit_lsn" in line:
            commit_lsn = int(line.split("commit_lsn ")[1].split()[0])
            continue
        if line.startswith("#"):
            continue
        _lsn, end_lsn, _term, _kind, _size, gtid = line.split()[:6]
        if gtid != "-" and int(end_lsn) <= commit_lsn:
            gtids.add(gtid.rstrip("+"))
    assert commit_lsn >= 0, f"no commit LSN in the dump of {node}:\n{dumped.stdout[:500]}"
    return gtids


def processlist(db: LocalMariaDB) -> list[dict[str, Any]]:
    conn = db.connect(read_timeout=10)
    try:
        with conn.cursor(pymysql.cursors.DictCursor) as cursor:
            cursor.execute("SELECT ID, USER, STATE, INFO FROM information_schema.PROCESSLIST")
            return list(cursor.fetchall())
    finally:
        conn.close()


def session_state(db: LocalMariaDB, connection_id: int) -> str | None:
    """The state of DB's session CONNECTION_ID (None when it is gone)."""
    return next((str(row["STATE"]) for row in processlist(db) if row["ID"] == connection_id),
                None)
