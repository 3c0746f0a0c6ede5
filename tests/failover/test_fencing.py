"""Fencing with real servers and agent processes: a primary cut off from its agents but
alive, one whose waiting commit a KILL QUERY turned into a local commit, a primary lost
together with its agent (the whole host), and a replica chosen while it is behind.

The agents reach server 1 through a FaultProxy (its agent's `[mariadb]` names the proxy,
and the agent advertises that address in its Hello, so the leader probes and tails it
there); clients that write "directly" use the server's own port. Server rows are ids: the
main writer's are 1, 2, ...; a direct client's are far above them.
"""

from __future__ import annotations

import re
import signal
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pymysql
import pytest
import trio

from agent.harness.local_mariadb import LocalMariaDB
from tests.agent.test_membership import post
from tests.replicas.test_stock_replica import checksum
from tests.support.cluster import AgentProcess, Cluster, wait_until
from tests.support.group import (
    APP_PASSWORD,
    APP_USER,
    SEMI_SYNC_WAIT,
    Writer,
    agents_beside,
    binlog_gtids,
    binlog_transactions,
    covers,
    group_of_three,
    ids,
    keeper,
    leader_status,
    more_commits,
    processlist,
    recorded_primary,
    restart_fenced,
    server_at,
    session_state,
    start_group,
    three_servers,
)
from tests.support.proxy import FaultProxy

pytestmark = pytest.mark.mariadb

DIRECT_ID = 1_000_000_000  # the row a client writes to the partitioned old primary itself
LATE_IDS = 2_000_000_000  # the rows of a client that asks a restarted agent for the primary
GTID = re.compile(r"\b\d+-\d+-\d+\b")


class DirectClient:
    """One INSERT as the application's user on DB's own port, in a thread; what it was told
    (`outcome`: "ok" or the error) once it returns."""

    def __init__(self, db: LocalMariaDB, row_id: int) -> None:
        self.db, self.row_id = db, row_id
        self.connection_id: int | None = None
        self.outcome: str | None = None
        self.done = threading.Event()
        threading.Thread(target=self._run, daemon=True, name="direct-client").start()

    def _run(self) -> None:
        try:
            conn = pymysql.connect(host=self.db.host, port=self.db.port, user=APP_USER,
                                   password=APP_PASSWORD, autocommit=True, connect_timeout=5)
            try:
                with conn.cursor() as cursor:
                    cursor.execute("SELECT CONNECTION_ID()")
                    row = cursor.fetchone()
                    assert row is not None
                    self.connection_id = int(row[0])
                    cursor.execute("INSERT INTO w.t VALUES (%s)", (self.row_id,))
                self.outcome = "ok"
            finally:
                conn.close()
        except pymysql.err.MySQLError as exc:
            self.outcome = repr(exc)
        finally:
            self.done.set()

    def waiting_for_ack(self) -> bool:
        return (self.connection_id is not None
                and session_state(self.db, self.connection_id) == SEMI_SYNC_WAIT)


class Sampler:
    """(read_only, gtid_binlog_pos) of DB, over and over on one connection, in a thread."""

    def __init__(self, db: LocalMariaDB) -> None:
        self.db = db
        self.samples: list[tuple[bool, str]] = []
        self.error: str | None = None
        self.stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="sampler")
        self._thread.start()

    def _run(self) -> None:
        conn = self.db.connect(read_timeout=10)
        try:
            with conn.cursor() as cursor:
                while not self.stop.is_set():
                    cursor.execute("SELECT @@read_only, @@gtid_binlog_pos")
                    row = cursor.fetchone()
                    assert row is not None
                    self.samples.append((bool(int(row[0])), str(row[1])))
                    self.stop.wait(0.01)
        except pymysql.err.MySQLError as exc:
            self.error = repr(exc)  # the test's end (the server killed), or its failure
        finally:
            conn.close()

    def finish(self) -> list[tuple[bool, str]]:
        self.stop.set()
        self._thread.join(10)
        assert self.error is None, f"sampling {self.db.port} failed: {self.error}"
        return self.samples


class NamedPrimary:
    """What AGENT's status names as the primary, over and over, in a thread (None while it
    does not answer or names none)."""

    def __init__(self, agent: AgentProcess) -> None:
        self.agent = agent
        self.shown: list[dict[str, Any] | None] = []
        self.stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="named-primary")
        self._thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            self.shown.append((self.agent.timeline() or {}).get("primary"))
            self.stop.wait(0.02)

    def finish(self) -> list[dict[str, Any] | None]:
        self.stop.set()
        self._thread.join(10)
        return self.shown


@dataclass
class Proxied:
    servers: dict[str, LocalMariaDB]
    cluster: Cluster
    proxy: FaultProxy  # between every agent and server 1
    writer: Writer


@asynccontextmanager
async def proxied_group(tmp_path: Path) -> AsyncIterator[Proxied]:
    """Three servers and their agents, a1's server behind a FaultProxy, adopted as the
    primary; a writer (`app`) following `binkeeper primary`, started."""
    servers = three_servers(tmp_path)
    try:
        async with trio.open_nursery() as nursery:
            proxy = FaultProxy(servers["a1"].port)
            await nursery.start(proxy.serve)
            cluster = agents_beside(servers, tmp_path, {"a1": proxy.listen_port})
            writer = Writer(cluster, APP_USER, APP_PASSWORD)
            try:
                await start_group(servers["a1"], cluster, app_user=True,
                                  address=("127.0.0.1", proxy.listen_port))
                writer.start()
                yield Proxied(servers, cluster, proxy, writer)
            finally:
                await trio.to_thread.run_sync(writer.finish)
                await trio.to_thread.run_sync(cluster.stop)
                nursery.cancel_scope.cancel()
    finally:
        for db in servers.values():
            db.cleanup()


def stuck_gtid(client: DirectClient) -> str | None:
    """The GTID of CLIENT's commit once it is in the binlog and waits: for its ACK, or
    (MARIADB.md: a second commit group reaches the binlog, then queues in state Commit)
    behind a commit waiting for its ACK. None before."""
    if client.connection_id is None or client.done.is_set():
        return None
    sessions = processlist(client.db)
    state = next((s["STATE"] for s in sessions if s["ID"] == client.connection_id), None)
    waiting = any(s["STATE"] == SEMI_SYNC_WAIT for s in sessions)
    if state not in (SEMI_SYNC_WAIT, "Commit") or not waiting:
        return None
    return next((gtid for gtid, statement in binlog_transactions(client.db)
                 if f"({client.row_id})" in statement), None)


async def direct_commit(db: LocalMariaDB, row_id: int, cluster: Cluster
                        ) -> tuple[DirectClient, str]:
    """A client of DB's own port inserts ROW_ID; it and its GTID, once its commit is in the
    binlog and stuck."""
    client = DirectClient(db, row_id)
    gtid: str = await wait_until(
        lambda: stuck_gtid(client), 15, f"the commit of {row_id} to be binlogged and wait",
        lambda: f"client {client.connection_id}: {client.outcome}\n"
        + "\n".join(map(str, processlist(db))))
    return client, gtid


async def partition_the_primary(group: Proxied, *, mid_load: bool
                                ) -> tuple[dict[str, DirectClient], LocalMariaDB]:
    """Cut server 1 off from every agent (it lives on, writable) while the writer commits
    (MID_LOAD), or between two of its commits; then clients of server 1's own port commit.
    Two commit groups end in its binlog, waiting: the writer's commit in flight at the cut
    (MID_LOAD only; the quorum may have committed it, its ACK lost) and a direct client's
    queued behind it, or two direct clients' (the first waiting for its ACK, the second
    queued). Returns the direct clients by the GTID each took, and the server the agents
    failed over to — once that has taken 100 more commits, every id acknowledged before the
    cut on it; no direct client has returned."""
    old, cluster, writer = group.servers["a1"], group.cluster, group.writer
    await more_commits(writer, 200, cluster, "through the proxy")
    if not mid_load:
        await trio.to_thread.run_sync(writer.pause)
    group.proxy.block()  # the agents lose the primary; clients on its own port do not
    cut_at = time.monotonic()
    acked_before = list(writer.acked)
    client, gtid = await direct_commit(old, DIRECT_ID, cluster)
    clients = {gtid: client}
    if await trio.to_thread.run_sync(client.waiting_for_ack):
        # no commit of the writer's in flight: a second group, queued behind the first
        second, gtid = await direct_commit(old, DIRECT_ID + 1, cluster)
        clients[gtid] = second
    if not mid_load:
        assert await trio.to_thread.run_sync(client.waiting_for_ack)
        writer.resume()
    proxied = ("127.0.0.1", group.proxy.listen_port)
    new_address = await wait_until(lambda: (p := recorded_primary(cluster)) and p != proxied
                                   and p, 60, "a failover from the cut-off primary",
                                   cluster.logs)
    new = server_at(group.servers, new_address)
    print(f"cut off; direct commits {sorted(clients)} wait; {new_address} ready "
          f"{time.monotonic() - cut_at:.2f}s later")
    await more_commits(writer, 100, cluster, "on the new primary")
    on_new = await trio.to_thread.run_sync(ids, new)
    missing = sorted(set(acked_before) - set(on_new))
    assert not missing, f"acknowledged ids missing on the new primary: {missing[:10]}"
    for client in clients.values():
        assert not client.done.is_set(), f"a direct client returned: {client.outcome}"
    return clients, new


def node_of(servers: dict[str, LocalMariaDB], address: tuple[str, int]) -> str:
    return next(node for node, db in servers.items() if (db.host, db.port) == address)


def refusal(cluster: Cluster, node: str) -> str | None:
    status = keeper(cluster, node)
    return status.get("error") if status.get("role") == "refused" else None


async def converged(cluster: Cluster, servers: dict[str, LocalMariaDB]) -> None:
    """Every server at the quorum's committed position, with the same checksum."""
    await wait_until(
        lambda: (c := leader_status(cluster).get("committed_gtid"))
        and all(db.variable("gtid_binlog_pos") == c for db in servers.values()),
        60, "every server at the quorum's committed position",
        lambda: cluster.logs() + "\n" + "\n".join(
            f"{n}: {db.variable('gtid_binlog_pos')}" for n, db in servers.items() if db.alive))
    sums = {node: await trio.to_thread.run_sync(checksum, db, "w.t")
            for node, db in servers.items()}
    assert len(set(sums.values())) == 1, sums


async def test_a_partitioned_primary_is_fenced_refused_then_cut_and_rejoins(
        tmp_path: Path) -> None:
    async with proxied_group(tmp_path) as group:
        servers, cluster, writer = group.servers, group.cluster, group.writer
        old = servers["a1"]
        clients, new = await partition_the_primary(group, mid_load=True)
        third = next(db for db in servers.values() if db not in (old, new))
        direct_ids = {client.row_id for client in clients.values()}

        # While cut off no direct commit returns (partition_the_primary), none is elsewhere.
        for db in (new, third):
            assert not direct_ids & set(await trio.to_thread.run_sync(ids, db))

        # Healed: its agent refuses it, naming exactly what it holds that was never committed
        # (what is in its binlog and not in the new primary's, which holds all committed).
        group.proxy.unblock()
        error = await wait_until(lambda: refusal(cluster, "a1"), 30,
                                 "a1's keeper to refuse its server", cluster.logs)
        on_old = await trio.to_thread.run_sync(binlog_gtids, old)
        on_new = set(await trio.to_thread.run_sync(binlog_gtids, new))
        never_committed = [gtid for gtid in on_old if gtid not in on_new]
        print(f"a1's keeper: {error}; never committed on server 1: {never_committed}")
        assert set(clients) <= set(never_committed)
        assert "never committed" in error
        assert error in cluster.agents["a1"].log_path.read_text()
        # Checked last, so that a refusal naming too little does not hide what follows.
        named_all = set(GTID.findall(error)) == set(never_committed)
        for client in clients.values():
            assert not client.done.is_set(), f"a direct client returned: {client.outcome}"

        # kill -9, restarted fenced: the unacknowledged tail is cut, and it rejoins.
        await trio.to_thread.run_sync(old.kill)
        for client in clients.values():
            await wait_until(client.done.is_set, 10, "a direct client to see its server die")
            assert client.outcome != "ok"
        await trio.to_thread.run_sync(restart_fenced, old)
        left = set(await trio.to_thread.run_sync(binlog_gtids, old)) & set(never_committed)
        assert not left, f"the restart did not cut {sorted(left)}"
        target = await trio.to_thread.run_sync(new.variable, "gtid_binlog_pos")
        await wait_until(lambda: covers(old.variable("gtid_binlog_pos"), target), 60,
                         f"server 1 to rejoin and reach {target}", cluster.logs)
        assert keeper(cluster, "a1").get("role") == "replica"

        await trio.to_thread.run_sync(writer.finish)
        await converged(cluster, servers)
        for node, db in servers.items():
            on_db = set(await trio.to_thread.run_sync(ids, db))
            assert not direct_ids & on_db, f"a never-acknowledged row is on {node}'s server"
            missing = sorted(set(writer.acked) - on_db)
            assert not missing, f"acknowledged ids missing on {node}'s server: {missing[:10]}"
        print(f"{len(writer.acked)} acknowledged, all on every server; tail cut: "
              f"{never_committed}")
        assert named_all, (f"the refusal names {GTID.findall(error)}; server 1 held "
                           f"{never_committed}, which the quorum never committed")


async def test_a_kill_query_commit_on_a_partitioned_primary_is_named_never_reset(
        tmp_path: Path) -> None:
    async with proxied_group(tmp_path) as group:
        servers, cluster, writer = group.servers, group.cluster, group.writer
        old = servers["a1"]
        clients, new = await partition_the_primary(group, mid_load=False)
        third = next(db for db in servers.values() if db not in (old, new))
        (gtid, killed), (queued_gtid, queued) = sorted(clients.items(),
                                                       key=lambda c: c[1].row_id)

        # MARIADB.md: KILL QUERY of a session waiting for its ACK commits it locally and
        # answers OK — a commit no agent has. The next one, queued, then waits in its turn.
        assert killed.connection_id is not None
        assert await trio.to_thread.run_sync(killed.waiting_for_ack)
        await trio.to_thread.run_sync(old.query, f"KILL QUERY {killed.connection_id}")
        await wait_until(killed.done.is_set, 10, "the killed query to return")
        assert killed.outcome == "ok", killed.outcome
        await wait_until(queued.waiting_for_ack, 10, "the queued commit to wait for its ACK")
        position = await trio.to_thread.run_sync(old.variable, "gtid_binlog_pos")
        assert position == queued_gtid
        assert killed.row_id in await trio.to_thread.run_sync(ids, old)

        group.proxy.unblock()
        error = await wait_until(lambda: refusal(cluster, "a1"), 30,
                                 "a1's keeper to refuse its server", cluster.logs)
        print(f"KILL QUERY committed {gtid} locally, {queued_gtid} waits; a1's keeper: {error}")
        assert "never committed" in error and queued_gtid in GTID.findall(error)

        # Never reset: while its keeper and the leader look at it again and again (their
        # connections through the proxy) and the new primary takes more commits.
        seen = group.proxy.forwarded
        await wait_until(lambda: group.proxy.forwarded >= seen + 12, 30,
                         "12 more connections from the agents to server 1", cluster.logs)
        await more_commits(writer, 100, cluster, "on the new primary")
        assert refusal(cluster, "a1") == error
        assert await trio.to_thread.run_sync(old.variable, "gtid_binlog_pos") == position
        assert killed.row_id in await trio.to_thread.run_sync(ids, old)
        assert not await trio.to_thread.run_sync(old.query, "SHOW SLAVE STATUS")
        assert await trio.to_thread.run_sync(old.variable, "server_id") == "1"
        assert not queued.done.is_set(), f"the queued commit returned: {queued.outcome}"
        for db in (new, third):
            assert not {killed.row_id, queued.row_id} & set(
                await trio.to_thread.run_sync(ids, db))
            assert not {gtid, queued_gtid} & set(await trio.to_thread.run_sync(binlog_gtids, db))
        # Checked last, so that a refusal naming too little does not hide the rest.
        assert gtid in GTID.findall(error), (
            f"the refusal does not name {gtid}, the commit KILL QUERY answered OK: {error}")


async def test_the_primary_and_its_agent_killed_together(tmp_path: Path) -> None:
    servers, cluster = group_of_three(tmp_path)
    writer = Writer(cluster, APP_USER, APP_PASSWORD)
    old, agent = servers["a1"], cluster.agents["a1"]
    late: Writer | None = None
    sampler: Sampler | None = None
    named: NamedPrimary | None = None
    try:
        await start_group(old, cluster, app_user=True)
        leader = await wait_until(cluster.leader, 15, "a leader", cluster.logs)
        if leader != "a1":  # the agent beside the primary leads: the whole host is lost
            code, body = await trio.to_thread.run_sync(
                post, f"{cluster.agents[leader].url}/v1/timelines/main/transfer", {"to": "a1"})
            assert code == 200, body
            await wait_until(lambda: cluster.leader() == "a1", 15, "a1 to lead", cluster.logs)
        writer.start()
        await more_commits(writer, 200, cluster, "on a1's server")
        assert cluster.leader() == "a1"
        acked_before = list(writer.acked)
        assert old.process is not None and agent.process is not None
        killed_at = time.monotonic()
        old.process.send_signal(signal.SIGKILL)
        agent.process.send_signal(signal.SIGKILL)
        old.kill()
        agent.kill()

        lost = ("127.0.0.1", old.port)
        address = await wait_until(lambda: (p := recorded_primary(cluster)) and p != lost
                                   and p, 60, "a failover without the leader's host",
                                   cluster.logs)
        ready_s = time.monotonic() - killed_at
        new = server_at(servers, address)
        await more_commits(writer, 100, cluster, "on the new primary")
        missing = sorted(set(acked_before) - set(ids(new)))
        assert not missing, f"acknowledged ids missing on the new primary: {missing[:10]}"
        status = leader_status(cluster)
        assert status["leader"] != "a1" and status["failover"]["reason"] == "failover"

        # The host comes back: server first (fenced), then its agent, which must not act on
        # the stale GROUP record it has on disk (server 1, ready) as if it were current. A
        # second client follows `binkeeper primary` asked of that agent only.
        log_offset = agent.log_path.stat().st_size
        restart_fenced(old)
        sampler = Sampler(old)
        named = NamedPrimary(agent)
        late = Writer(cluster, APP_USER, APP_PASSWORD, ask=("a1",), first_id=LATE_IDS,
                      read_timeout=2)
        agent.start()
        late.start()
        # Until a1 has caught up, what it does and says comes from its stale record.
        await wait_until(lambda: (agent.timeline() or {}).get("primary") == {
            "node": node_of(servers, address), "host": address[0], "port": address[1]}, 30,
            "a1 to name the new primary", cluster.logs)
        samples, shown = sampler.finish(), named.finish()
        after_restart = agent.log_path.read_text()[log_offset:]
        writable = sum(1 for read_only, _ in samples if not read_only)
        stale = sorted({f"{p['host']}:{p['port']}" for p in shown if p
                        and (p["host"], p["port"]) != address})
        print(f"until a1 caught up: server 1 writable in {writable} of {len(samples)} samples; "
              f"a1 named {stale or 'no other'} primary in {len(shown)} looks")
        assert "promoted the server beside this agent" not in after_restart, after_restart
        assert not writable, f"server 1 writable in {writable} of {len(samples)} samples"
        assert not stale, f"a1's status named {stale} the primary after its restart"

        target = new.variable("gtid_binlog_pos")

        def rejoined() -> bool:
            assert not refusal(cluster, "a1"), f"a1 refuses its server: {refusal(cluster, 'a1')}"
            return covers(old.variable("gtid_binlog_pos"), target)

        await wait_until(rejoined, 60, f"server 1 to rejoin and reach {target}",
                         lambda: f"{keeper(cluster, 'a1')}\n{processlist(old)}\n"
                         f"client asking a1: {late.acked[-3:]}, {late.last_error}\n"
                         + cluster.logs())
        assert keeper(cluster, "a1").get("role") == "replica"
        assert old.variable("read_only") == "1"
        await more_commits(late, 20, cluster, "by the client asking a1")
        late.finish()
        writer.finish()
        await converged(cluster, servers)
        for node, db in servers.items():
            missing = sorted(set(writer.acked + late.acked) - set(ids(db)))
            assert not missing, f"acknowledged ids missing on {node}'s server: {missing[:10]}"
        print(f"host of the leader and the primary killed: {address} ready after {ready_s:.2f}s;"
              f" {len(writer.acked)} + {len(late.acked)} (asking a1) acknowledged, all on every"
              f" server after the rejoin; that client's errors: {late.errors}")
    finally:
        for watcher in (sampler, named):
            if watcher is not None:
                watcher.stop.set()
        writer.finish()
        if late is not None:
            late.finish()
        cluster.stop()
        for db in servers.values():
            db.cleanup()


async def test_a_replica_behind_is_promoted_only_once_it_has_applied_everything(
        tmp_path: Path) -> None:
    servers, cluster = group_of_three(tmp_path)
    writer = Writer(cluster, APP_USER, APP_PASSWORD)
    old, dead, behind = servers["a1"], servers["a2"], servers["a3"]
    lock: pymysql.Connection | None = None
    sampler: Sampler | None = None
    try:
        await start_group(old, cluster, app_user=True)
        writer.start()
        await more_commits(writer, 100, cluster, "on a1's server")
        target = old.variable("gtid_binlog_pos")
        await wait_until(lambda: covers(behind.variable("gtid_binlog_pos"), target), 30,
                         "a3's server to replicate", cluster.logs)
        # a3's server stops applying (its SQL thread waits for the table), still receiving.
        lock = behind.connect()
        with lock.cursor() as cursor:
            cursor.execute("LOCK TABLES w.t READ")
        dead.kill()  # the other replica: a3's is the only one left to fail over to
        await more_commits(writer, 200, cluster, "while a3's server does not apply them")
        acked_before = list(writer.acked)
        behind_by = len(set(acked_before) - set(ids(behind)))
        assert behind_by, "a3's server is not behind"
        sampler = Sampler(behind)
        old.kill()

        await wait_until(lambda: (leader_status(cluster).get("promoting") or {}).get("node")
                         == "a3", 30, "a3's server to be chosen", cluster.logs)
        committed = leader_status(cluster)["committed_gtid"]
        await wait_until(lambda: keeper(cluster, "a3").get("role") == "catching up", 15,
                         "a3's keeper to catch its server up", cluster.logs)
        assert recorded_primary(cluster) is None  # not for clients yet
        assert behind.variable("read_only") == "1"
        assert not covers(behind.variable("gtid_binlog_pos"), committed)
        with lock.cursor() as cursor:
            cursor.execute("UNLOCK TABLES")  # it applies what it has received, then ...
        released_at = time.monotonic()

        await wait_until(lambda: recorded_primary(cluster) == ("127.0.0.1", behind.port), 30,
                         "a3's server to be the primary", cluster.logs)
        ready_s = time.monotonic() - released_at
        samples = sampler.finish()
        writable = [position for read_only, position in samples if not read_only]
        early = [position for position in writable if not covers(position, committed)]
        assert writable and not early, f"writable before applying {committed}: {early[:3]}"
        assert any(read_only and not covers(position, committed)
                   for read_only, position in samples)
        missing = sorted(set(acked_before) - set(ids(behind)))
        assert not missing, f"acknowledged ids missing on the new primary: {missing[:10]}"
        await more_commits(writer, 50, cluster, "on a3's server")  # its first new writes
        writer.finish()
        missing = sorted(set(writer.acked) - set(ids(behind)))
        assert not missing, f"acknowledged ids missing on the new primary: {missing[:10]}"
        print(f"a3's server chosen {behind_by} acknowledged ids behind; "
              f"ready {ready_s:.2f}s after its lock was released; {len(samples)} samples, "
              f"{len(samples) - len(writable)} read-only; {len(writer.acked)} acknowledged")
    finally:
        if sampler is not None:
            sampler.stop.set()
        if lock is not None:
            lock.close()
        writer.finish()
        cluster.stop()
        for db in servers.values():
            db.cleanup()
