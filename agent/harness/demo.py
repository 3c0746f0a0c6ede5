"""`binkeeper demo`: a MariaDB primary whose COMMITs wait for a 3-agent quorum.

It starts a real `mariadbd` (binlog ROW + CRC32, semi-sync on, AFTER_SYNC, no timeout
fallback) and 3 agents on this machine. The leader tails the primary as a semi-sync
replica and acknowledges each transaction only once a majority of agents has it on disk,
so every COMMIT the writer sees return is already on a quorum. One agent is killed midway;
commits go on. The verdict checks every acknowledged write against the quorum's history.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import struct
import sys
import tempfile
import threading
from pathlib import Path

import trio

import walstore
from agent.binlog.files import read_transactions
from agent.binlog.transactions import whole_transactions
from agent.config import Address, Config, MariaDBConfig, Peer
from agent.harness.local_mariadb import LocalMariaDB
from agent.harness.ports import free_port
from agent.harness.workload import Workload
from agent.mariadb.binaries import MariaDBError
from agent.process import Agent

TRANSACTIONS = 3000
SEMI_SYNC = (
    "SET GLOBAL rpl_semi_sync_master_wait_point = 'AFTER_SYNC'",
    "SET GLOBAL rpl_semi_sync_master_wait_no_slave = ON",
    "SET GLOBAL rpl_semi_sync_master_timeout = 4294967295",
    "SET GLOBAL rpl_semi_sync_master_enabled = ON",
)


def say(text: str) -> None:
    print(text, flush=True)


class Demo:
    def __init__(self, root: Path, transactions: int) -> None:
        self.root = root
        self.transactions = transactions
        self.db = LocalMariaDB(root / "mariadb")
        self.ids = ["a1", "a2", "a3"]
        self.agents: dict[str, Agent] = {}
        self.scopes = {i: trio.CancelScope() for i in self.ids}
        self.killed: str | None = None
        self.acked = 0
        self.stop_writer = threading.Event()

    def make_agents(self) -> None:
        ports = {i: (free_port(), free_port()) for i in self.ids}
        for i in self.ids:
            config = Config(
                node_id=i,
                data_dir=self.root / i,
                listen_peer=Address("127.0.0.1", ports[i][0]),
                listen_http=Address("127.0.0.1", ports[i][1]),
                cluster_id="demo",
                peers=tuple(Peer(o, Address("127.0.0.1", ports[o][0])) for o in self.ids if o != i),
                mariadb=MariaDBConfig(host="127.0.0.1", port=self.db.port, enabled=True),
            )
            self.agents[i] = Agent(config)

    async def run_agent(self, node_id: str) -> None:
        with self.scopes[node_id]:
            await self.agents[node_id].run()

    def leader(self) -> str | None:
        for node_id, agent in self.agents.items():
            if node_id != self.killed and agent.node is not None and agent.node.role == "leader":
                return node_id
        return None

    def semi_sync(self, name: str) -> int:
        return int(self.db.query(f"SHOW GLOBAL STATUS LIKE '{name}'")[0][1])

    def progress_line(self) -> str:
        parts = []
        for node_id, agent in self.agents.items():
            if node_id == self.killed or agent.node is None:
                parts.append(f"{node_id}: killed")
            else:
                parts.append(f"{node_id} {agent.node.role[:6]:6} commit {agent.node.commit_lsn:>9}")
        return f"COMMITs returned {self.acked:>5} | " + " | ".join(parts)

    async def main(self) -> int:
        say(f"Starting a MariaDB primary (binlog ROW, CRC32) in {self.root} ...")
        await trio.to_thread.run_sync(self.db.start)
        workload = Workload(lambda: self.db.connect(), seed=7)
        await trio.to_thread.run_sync(workload.setup)
        for statement in SEMI_SYNC:
            await trio.to_thread.run_sync(self.db.query, statement)
        say(f"  mariadbd on 127.0.0.1:{self.db.port}; semi-sync on (AFTER_SYNC, no timeout)")
        self.make_agents()
        async with trio.open_nursery() as nursery:
            for node_id in self.ids:
                nursery.start_soon(self.run_agent, node_id)
            with trio.fail_after(30):
                while (leader := self.leader()) is None or not (
                    (source := self.agents[leader].source) and source.status.connected
                ):
                    await trio.sleep(0.05)
            say(
                f"Started 3 agents (fsync on); {leader} leads and tails the primary as a "
                "semi-sync replica."
            )
            say(
                f"Writing {self.transactions} OLTP transactions; each COMMIT returns only "
                "once a majority of agents has it on disk ..."
            )
            writer_done = trio.Event()

            def on_commit(_txn: int) -> None:
                self.acked += 1

            async def writer() -> None:
                await trio.to_thread.run_sync(
                    lambda: workload.run(
                        self.transactions, on_commit=on_commit, stop=self.stop_writer
                    )
                )
                writer_done.set()

            nursery.start_soon(writer)
            next_report = trio.current_time()
            while not writer_done.is_set():
                if self.killed is None and self.acked >= self.transactions // 3:
                    victim = next(n for n in self.ids if n != self.leader())
                    self.killed = victim
                    self.scopes[victim].cancel()
                    say(f">>> killed agent {victim}: the other two are still a majority")
                if trio.current_time() >= next_report:
                    say(self.progress_line())
                    next_report += 0.5
                await trio.sleep(0.05)
            say(self.progress_line())
            # Let the live agents settle on one committed log, then stop them.
            with trio.move_on_after(10):
                while (
                    len(
                        {
                            (a.node.commit_lsn, a.store.flush_lsn)  # type: ignore[union-attr]
                            for n, a in self.agents.items()
                            if n != self.killed
                        }
                    )
                    != 1
                ):
                    await trio.sleep(0.05)
            nursery.cancel_scope.cancel()
        return self.verdict(workload)

    def committed_transactions(self, node_id: str) -> dict[str, bytes]:
        agent = self.agents[node_id]
        directory = agent.timeline_dir
        out: dict[str, bytes] = {}
        with walstore.WalStore.open(directory, create=False) as store:
            records = store.read(store.first_lsn)
            for gtid, raw in whole_transactions(records, upto_lsn=store.control.commit_lsn):
                if gtid in out:
                    raise AssertionError(f"{node_id} holds {gtid} twice")
                out[gtid] = raw
        return out

    def verdict(self, workload: Workload) -> int:
        acked_ids = workload.history.acked
        no_tx = self.semi_sync("Rpl_semi_sync_master_no_tx")
        yes_tx = self.semi_sync("Rpl_semi_sync_master_yes_tx")
        binlog = {t.gtid: t.raw for t in read_transactions(self.db.binlog_files())}
        histories = {n: self.committed_transactions(n) for n in self.ids}
        holders: dict[str, int] = {}
        for history in histories.values():
            for gtid, raw in history.items():
                if binlog.get(gtid) == raw:
                    holders[gtid] = holders.get(gtid, 0) + 1
        quorum = {g for g, count in holders.items() if count >= 2}
        quorum_bytes = b"".join(binlog[g] for g in quorum)
        lost = [i for i in acked_ids if struct.pack("<q", i) not in quorum_bytes]
        say("")
        say(
            f"The writer saw {len(acked_ids)} COMMITs return; the primary counted {yes_tx} "
            f"semi-sync acknowledged commits and {no_tx} that fell back to asynchronous."
        )
        say(
            f"Transactions on a majority of agents, byte for byte as in the primary's binlog: "
            f"{len(quorum)}; acknowledged writes missing from them: {len(lost)}."
        )
        if lost or no_tx:
            say("VERDICT: FAIL")
            return 1
        say(
            "VERDICT: PASS — every COMMIT the client saw return is on a majority of agents' "
            "disks, exactly once."
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
