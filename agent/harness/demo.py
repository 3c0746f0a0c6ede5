"""`binkeeper demo`: automatic failover told with real processes on this machine.

Three `mariadbd` servers (a writable primary, two read-only replicas) and three agents, each
its own `binkeeper run` process beside one server. An OLTP writer, logged in as an
application user without READ_ONLY ADMIN, writes wherever the agents say the primary is.
Then, with the writer running:

1. kill -9 of the primary's mariadbd: the leader detects it, records the most advanced
   replica as the new primary, its agent promotes it, the writer follows — with timings;
2. the old primary restarts fenced (`--init-rpl-role=SLAVE --read-only=ON`, its
   unacknowledged tail cut) and its agent makes it a replica of the committed history;
3. kill -9 of one agent process: the other two are a majority, commits go on; it restarts
   and catches up;
4. the verdict: every acknowledged commit on the new primary, none twice, no errant GTID
   on any server, CHECKSUM TABLE equal on all three.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from agent.harness.group import FailoverGroup, GroupError, Member
from agent.harness.local_mariadb import LocalMariaDB
from agent.harness.verdict import judge
from agent.harness.workload import Workload
from agent.harness.writer import Writer
from agent.mariadb.binaries import MariaDBError

TRANSACTIONS = 3000
PROGRESS_EVERY = 0.5  # seconds between two progress lines
TABLES = ("shop.accounts", "shop.orders", "shop.ledger")

_print_lock = threading.Lock()


def say(text: str) -> None:
    with _print_lock:
        print(text, flush=True)


class Progress:
    """A line every PROGRESS_EVERY seconds, from its own thread, while the story runs."""

    def __init__(self, group: FailoverGroup, writer: Writer) -> None:
        self.group = group
        self.writer = writer
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="progress", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.wait(PROGRESS_EVERY):
            say(self.line())

    def line(self) -> str:
        timelines = self.group.timelines()
        shown = next((t.get("primary") for t in timelines.values() if t is not None), None)
        primary = f"{shown['node']} (:{shown['port']})" if shown else "none"
        parts = []
        for node, timeline in timelines.items():
            if timeline is None:
                alive = self.group.members[node].agent.alive
                parts.append(f"{node} {'no answer' if alive else 'killed'}")
                continue
            keeper = (timeline.get("keeper") or {}).get("role") or "-"
            parts.append(f"{node} {timeline.get('role')!s:8} commit_lsn "
                         f"{timeline.get('commit_lsn', 0):>8}, server {keeper}")
        return (f"  acked {self.writer.history.acked_count():>6} | primary {primary:<11} | "
                + " | ".join(parts))


class Demo:
    def __init__(self, root: Path, transactions: int) -> None:
        self.root = root
        self.transactions = transactions
        self.group = FailoverGroup(root, 3, database="shop",
                                   privileges="SELECT, INSERT, UPDATE, DELETE")
        # Only its transactions are used here (the schema comes from prepare()).
        self.workload = Workload(lambda: self.group.members["a1"].server.connect(), seed=7)
        self.writer = Writer(self.group.primary, self.group.app_connect,
                             transaction=self.workload.transaction)
        self.progress = Progress(self.group, self.writer)

    def acked(self) -> int:
        return self.writer.history.acked_count()

    def wait_acked(self, count: int, what: str, timeout: float = 300.0) -> None:
        self.group.wait_for(lambda: self.acked() >= count, timeout, what)

    def run(self) -> int:
        group = self.group
        say(f"Binkeeper demo: automatic failover, every process real, in {self.root}")
        say("Starting 3 MariaDB servers (log_bin, ROW, CRC32, gtid_strict_mode, "
            "log_slave_updates) and 3 agents, each `binkeeper run` in its own process ...")
        group.start(prepare=self.prepare)
        for node, member in group.members.items():
            options = " ".join(member.server.extra_args) or "writable"
            say(f"  {node}: agent pid {member.agent.process.pid if member.agent.process else '-'}"
                f", http {member.agent.url}; its server 127.0.0.1:{member.server.port} "
                f"(server_id {member.server.server_id}, {options})")
        leader = group.leader()
        say(f"  the agents adopted a1's server as the primary (semi-sync, AFTER_SYNC, no "
            f"fallback); {leader} leads and tails it; the other servers replicate from "
            "their agents (committed history only)")
        say("Writing OLTP transactions as user 'app' (no READ_ONLY ADMIN) to the server the "
            "agents name as the primary; each COMMIT returns once a majority of agents has "
            "it on disk ...")
        self.writer.start()
        self.progress.start()
        try:
            self.fail_over()
            self.kill_an_agent()
            self.wait_acked(self.transactions, f"{self.transactions} acknowledged commits")
        finally:
            self.writer.stop()
            self.progress.stop()
        say(f"Stopped the writer at {self.acked()} acknowledged commits; waiting until every "
            "server has applied the same history ...")
        verdict = judge(group, [self.writer.history], "shop.ledger", TABLES)
        say("")
        for line in verdict.lines():
            say(line)
        if not verdict.passed:
            say("VERDICT: FAIL")
            return 1
        say("VERDICT: PASS — every commit the client saw return survived the kill -9 of the "
            "primary and of an agent, exactly once, and all three servers hold the same "
            "data with no errant GTID.")
        return 0

    def prepare(self, db: LocalMariaDB) -> None:
        """The OLTP schema and its accounts, on the first primary before semi-sync."""
        Workload(db.connect, seed=7).setup()

    def fail_over(self) -> None:
        group = self.group
        self.wait_acked(self.transactions // 3, "commits before the kill")
        old = group.primary_member()
        if old is None:
            raise GroupError("no ready primary to kill")
        epoch = self._epoch()
        pid = old.server.process.pid if old.server.process else "-"
        before = self.acked()
        killed_at = group.kill_server(old.node_id)
        say(f">>> kill -9 of the primary: {old.node_id}'s mariadbd 127.0.0.1:{old.server.port} "
            f"(pid {pid}), {before} commits acknowledged so far")
        new_address = group.wait_new_primary(old.address)
        named_at = time.monotonic()
        new = group.member_at(new_address)
        first_ack = group.wait_for(lambda: self.writer.history.first_ack(killed_at, new_address),
                                   60, "the writer's first commit on the new primary")
        entry = self._failover_entry(epoch)
        say(f"Failover: {new.node_id}'s server 127.0.0.1:{new.server.port} is the primary now")
        if entry is not None:
            silent, record, ready = (float(entry.get(k) or 0.0)
                                     for k in ("silent_s", "record_s", "ready_s"))
            say(f"  leader's timeline: primary silent {silent:.2f} s (stream and SQL probe) → "
                f"failover recorded {record * 1000:.0f} ms later → catch-up and promotion "
                f"{ready - record:.2f} s → ready")
        say(f"  from the kill -9: new primary named after {named_at - killed_at:.2f} s, the "
            f"writer's first acknowledged commit on it after {first_ack - killed_at:.2f} s")
        self.rejoin(old)

    def rejoin(self, old: Member) -> None:
        group = self.group
        say(f">>> restarting {old.node_id}'s mariadbd (the old primary) with "
            "--init-rpl-role=SLAVE --read-only=ON: fenced, its unacknowledged tail cut")
        log = old.server.error_log
        offset = log.stat().st_size if log.exists() else 0
        started = time.monotonic()
        group.restart_server(old.node_id)
        say(f"  its error log: {cut_tail(log, offset)}")
        group.wait_replicas_caught_up(timeout=120)
        say(f"Old primary rejoined: {old.node_id}'s server replicates from agent "
            f"{old.node_id} as server_id {old.server.variable('server_id')} (read-only) and "
            f"converged with the new primary in {time.monotonic() - started:.2f} s")

    def kill_an_agent(self) -> None:
        group = self.group
        self.wait_acked(2 * self.transactions // 3, "commits before the agent kill")
        leader = group.leader()
        primary = group.primary_member()
        # A follower, preferably not beside the primary: the story is "a majority is left".
        followers = [n for n in group.members if n != leader]
        victim = next((n for n in followers if primary is None or n != primary.node_id),
                      followers[0])
        agent = group.members[victim].agent
        pid = agent.process.pid if agent.process else "-"
        before = self.acked()
        group.kill_agent(victim)
        say(f">>> kill -9 of agent {victim} (pid {pid}): the other two are still a majority")
        more = max(20, self.transactions // 10)
        started = time.monotonic()
        self.wait_acked(before + more, f"{more} commits without agent {victim}")
        say(f"  commits go on: {more} more acknowledged without it in "
            f"{time.monotonic() - started:.2f} s")
        target = int((group.leader_timeline() or {}).get("commit_lsn") or 0)
        group.start_agent(victim)
        started = time.monotonic()
        group.wait_for(lambda: int((agent.timeline(timeout=0.5) or {}).get("commit_lsn", -1))
                       >= target, 60, f"agent {victim} to catch up after its restart")
        say(f">>> restarted agent {victim}: it caught up with the log the others committed "
            f"without it (commit_lsn {target}) in {time.monotonic() - started:.2f} s")

    def _epoch(self) -> int:
        timeline = self.group.leader_timeline() or {}
        return int((timeline.get("failover") or {}).get("epoch") or 0)

    def _failover_entry(self, after_epoch: int) -> dict[str, Any] | None:
        """The leader's account of the failover (epoch above AFTER_EPOCH), once ready."""
        def entry() -> dict[str, Any] | None:
            timeline = self.group.leader_timeline() or {}
            for item in (timeline.get("failover") or {}).get("failovers") or []:
                if int(item.get("epoch", 0)) > after_epoch and "ready_s" in item:
                    return dict(item)
            return None

        try:
            return self.group.wait_for(entry, 10, "the leader's failover timings")
        except GroupError:
            return None  # leadership moved: the new leader has no account of it


def cut_tail(error_log: Path, offset: int) -> str:
    """What the restart's binlog recovery says it cut (MARIADB.md: `--init-rpl-role=SLAVE`
    truncates the transactions no replica acknowledged)."""
    try:
        with error_log.open("rb") as handle:
            handle.seek(offset)
            text = handle.read().decode(errors="replace")
    except OSError:
        return "(unreadable)"
    cut = [line.split("] ", 1)[-1] for line in text.splitlines()
           if "truncated binlog file" in line]
    return cut[-1] if cut else "no unacknowledged transaction was in its binlog to cut"


def main(args: argparse.Namespace) -> int:
    root = Path(tempfile.mkdtemp(prefix="binkeeper-demo-"))
    demo = Demo(root, getattr(args, "transactions", None) or TRANSACTIONS)
    try:
        return demo.run()
    except KeyboardInterrupt:
        say("\ninterrupted: stopping everything")
        return 130
    except (MariaDBError, GroupError) as exc:
        say(f"demo: {exc}")
        return 1
    finally:
        demo.group.close()
        if args.keep:
            say(f"(kept {root}: servers' data and error logs, agents' configs, logs and WALs)")
        else:
            shutil.rmtree(root, ignore_errors=True)
