"""`binkeeper demo`: a real MariaDB, its binlog, and a 3-agent quorum on this machine.

What it shows today: an OLTP writer commits on a real `mariadbd`; each transaction of its
binlog (events verbatim) is appended through the quorum's leader, fsynced on a majority and
committed; one agent is killed midway and commits go on; the verdict checks that every
transaction the server committed is in the quorum's committed history, byte for byte,
exactly once. (The semi-sync tailer that makes the primary's COMMIT wait for the quorum is
the next step; see docs/architecture.md.)
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
import threading
from pathlib import Path

import trio

import walstore
from agent.binlog_file import BinlogFollower
from agent.config import Address, Config, Peer
from agent.mariadb_local import LocalMariaDB, MariaDBError, free_port
from agent.run import Agent
from agent.timeline import CommitOutcomeUnknown, NotLeaderError
from agent.workload import Workload

TRANSACTIONS = 3000


def say(text: str) -> None:
    print(text, flush=True)


class Demo:
    def __init__(self, root: Path, transactions: int) -> None:
        self.root = root
        self.transactions = transactions
        self.db = LocalMariaDB(root / "mariadb")
        ids = ["a1", "a2", "a3"]
        ports = {i: (free_port(), free_port()) for i in ids}
        self.configs = {
            i: Config(
                node_id=i,
                data_dir=root / i,
                listen_peer=Address("127.0.0.1", ports[i][0]),
                listen_http=Address("127.0.0.1", ports[i][1]),
                cluster_id="demo",
                peers=tuple(Peer(o, Address("127.0.0.1", ports[o][0])) for o in ids if o != i),
            )
            for i in ids
        }
        self.agents = {i: Agent(c) for i, c in self.configs.items()}
        self.scopes = {i: trio.CancelScope() for i in ids}
        self.killed: str | None = None
        self.shipped = 0
        self.shipped_gtids: dict[str, bytes] = {}
        self.mariadb_acked = 0
        self.stop_writer = threading.Event()

    async def run_agent(self, node_id: str) -> None:
        with self.scopes[node_id]:
            await self.agents[node_id].run()

    def leader(self) -> str | None:
        for node_id, agent in self.agents.items():
            if node_id != self.killed and agent.node is not None and agent.node.role == "leader":
                return node_id
        return None

    async def wait_leader(self, timeout: float = 15.0) -> str:
        with trio.fail_after(timeout):
            while (leader := self.leader()) is None:
                await trio.sleep(0.05)
        return leader

    async def ship(self, follower: BinlogFollower, done: trio.Event) -> None:
        """Append each new binlog transaction through the quorum, in order, once."""
        while True:
            batch = await trio.to_thread.run_sync(follower.poll)
            if not batch and done.is_set():
                return
            for transaction in batch:
                while True:
                    leader = await self.wait_leader()
                    node = self.agents[leader].node
                    assert node is not None
                    try:
                        await node.propose(transaction.raw, gtid=transaction.gtid)
                        break
                    except (NotLeaderError, CommitOutcomeUnknown):
                        await trio.sleep(0.05)
                self.shipped += 1
                self.shipped_gtids[transaction.gtid] = transaction.raw
            if not batch:
                await trio.sleep(0.02)

    def progress_line(self) -> str:
        parts = []
        for node_id, agent in self.agents.items():
            if node_id == self.killed or agent.node is None:
                parts.append(f"{node_id}: killed")
            else:
                node = agent.node
                parts.append(f"{node_id} {node.role[:6]:6} commit {node.commit_lsn:>9}")
        return (
            f"MariaDB committed {self.mariadb_acked:>5} | quorum committed "
            f"{self.shipped:>5} | " + " | ".join(parts)
        )

    async def main(self) -> int:
        say(f"Starting a MariaDB server (binlog ROW, CRC32) in {self.root} ...")
        await trio.to_thread.run_sync(self.db.start)
        say(f"  mariadbd on 127.0.0.1:{self.db.port}")
        workload = Workload(lambda: self.db.connect(), seed=7)
        await trio.to_thread.run_sync(workload.setup)
        async with trio.open_nursery() as nursery:
            for node_id in self.agents:
                nursery.start_soon(self.run_agent, node_id)
            leader = await self.wait_leader()
            say(f"Started 3 agents (fsync on); {leader} was elected leader.")
            say(
                f"Writing {self.transactions} OLTP transactions; each binlog transaction goes "
                "through the quorum ..."
            )
            follower = BinlogFollower(self.db.binlog_files)
            writer_done = trio.Event()

            def on_commit(_txn: int) -> None:
                self.mariadb_acked += 1

            async def writer() -> None:
                await trio.to_thread.run_sync(
                    lambda: workload.run(
                        self.transactions, on_commit=on_commit, stop=self.stop_writer
                    )
                )
                writer_done.set()

            nursery.start_soon(writer)
            shipper_done = trio.Event()

            async def shipper() -> None:
                await self.ship(follower, writer_done)
                shipper_done.set()

            nursery.start_soon(shipper)
            killed_at = self.transactions // 3
            next_report = trio.current_time()
            while not shipper_done.is_set():
                if self.killed is None and self.shipped >= killed_at:
                    victim = next(n for n in self.agents if n != self.leader())
                    self.killed = victim
                    self.scopes[victim].cancel()
                    say(f">>> killed agent {victim}: the other two are still a majority")
                if trio.current_time() >= next_report:
                    say(self.progress_line())
                    next_report += 0.5
                await trio.sleep(0.05)
            say(self.progress_line())
            nursery.cancel_scope.cancel()
        return self.verdict(workload)

    def verdict(self, workload: Workload) -> int:
        acked = len(workload.history.acked)
        committed_binlog = dict(self.shipped_gtids)
        holders: dict[str, int] = {}
        duplicates = 0
        for node_id, config in self.configs.items():
            directory = config.data_dir / "timelines" / config.timeline_id
            with walstore.WalStore.open(directory, create=False) as store:
                commit = store.control.commit_lsn
                seen: set[str] = set()
                for rec in store.read(store.first_lsn):
                    if rec.kind is not walstore.RecordKind.DATA or rec.end_lsn > max(
                        commit, store.flush_lsn if node_id != self.killed else commit
                    ):
                        continue
                    if rec.gtid in seen:
                        duplicates += 1
                    seen.add(rec.gtid or "")
                    if committed_binlog.get(rec.gtid or "") == rec.payload:
                        holders[rec.gtid or ""] = holders.get(rec.gtid or "", 0) + 1
        missing = [g for g in committed_binlog if holders.get(g, 0) < 2]
        say("")
        say(
            f"MariaDB acknowledged {acked} writer transactions; its binlog holds "
            f"{len(committed_binlog)} transactions in all (schema setup included)."
        )
        say(
            f"On a majority of agents, byte for byte: {len(committed_binlog) - len(missing)}; "
            f"missing: {len(missing)}; duplicates: {duplicates}."
        )
        if missing or duplicates or len(committed_binlog) < acked:
            say("VERDICT: FAIL")
            return 1
        say(
            "VERDICT: PASS — every transaction MariaDB committed is in the quorum's history, "
            "exactly once, on a majority of disks."
        )
        return 0


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(
        stream=sys.stderr, level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    root = Path(tempfile.mkdtemp(prefix="binkeeper-demo-"))
    demo = Demo(root, getattr(args, "transactions", None) or TRANSACTIONS)
    try:
        return trio.run(demo.main)
    except KeyboardInterrupt:
        say("\ninterrupted: stopping everything")
        return 130
    except MariaDBError as exc:
        say(f"demo: {exc}")
        return 1
    finally:
        demo.stop_writer.set()
        demo.db.kill()
        if args.keep:
            say(f"(kept {root})")
        else:
            shutil.rmtree(root, ignore_errors=True)
