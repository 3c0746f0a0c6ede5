"""The source's threads end with their session (issue "hostile input, bounded resources").

A leader tails a real semi-sync primary in process, with a follower played by the test.
Sessions end, again and again, the two ways they do in production — the primary drops the
connection, the node loses leadership — while a writer commits. When `_session()` returns,
no thread of it runs any more (none holds a token of trio's default thread limiter, which
the WAL's fsync worker shares), and the process's thread count does not grow.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pymysql
import pytest
import trio

import consensus
import walstore
from agent.config import MariaDBConfig
from agent.harness.local_mariadb import LocalMariaDB
from agent.node.loop import TimelineNode
from agent.source.source import ACK_THREAD, CONNECT_THREAD, READ_THREAD, MariaDBSource
from agent.source.tailer import ReplicationError
from tests.mariadb.test_semisync import enable_semi_sync

pytestmark = pytest.mark.mariadb

MEMBERS = consensus.Membership(1, frozenset({"a1", "a2", "a3"}))
SOURCE_THREADS = {CONNECT_THREAD, READ_THREAD, ACK_THREAD}
ROUNDS = 4  # of each way a session ends: a leak of even one thread a round would show
SPARE_THREADS = 4  # idle threads trio's thread cache may keep for reuse (10 s)


@pytest.fixture
def primary(tmp_path: Path) -> Iterator[LocalMariaDB]:
    db = LocalMariaDB(tmp_path / "primary").start()
    try:
        db.execute("CREATE DATABASE t", "CREATE TABLE t.x (id INT PRIMARY KEY AUTO_INCREMENT)")
        enable_semi_sync(db)  # after the schema: from here each commit waits for an ACK
        yield db
    finally:
        db.cleanup()


async def until(predicate: Callable[[], object], what: str, timeout: float = 15) -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.01)


def source_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name in SOURCE_THREADS]


def default_limiter_borrowers() -> list[str]:
    """Who holds tokens of trio's default thread limiter (threads are named placeholders)."""
    limiter = trio.to_thread.current_default_thread_limiter()
    return [str(getattr(b, "name", b)) for b in limiter.statistics().borrowers]


class Leader:
    """Node a1, made leader by votes the test casts; a2 acknowledges whatever it is sent."""

    def __init__(self, store: walstore.WalStore) -> None:
        self.node = TimelineNode(node_id="a1", initial_membership=MEMBERS, store=store,
                                 send=self._send, tick_seconds=3600,
                                 core_config=consensus.Config("a1"), rng=random.Random(1))

    def _send(self, dst: str, msg: object) -> None:
        if dst == "a2" and isinstance(msg, consensus.AppendRequest):
            end = msg.entries[-1].end_lsn if msg.entries else msg.prev_lsn
            self.node.deliver(consensus.AppendResponse(msg.term, "a2", True, flush_lsn=end))

    async def elect(self) -> None:
        node = self.node
        await node.admin(lambda core: core.campaign())
        await until(lambda: node.core.role in (consensus.Role.PRE_CANDIDATE,
                                               consensus.Role.CANDIDATE), "a campaign")
        if node.core.role is consensus.Role.PRE_CANDIDATE:
            node.deliver(consensus.VoteResponse(node.core.term + 1, "a2", True, pre_vote=True))
            await until(lambda: node.core.role is consensus.Role.CANDIDATE, "candidacy")
        node.deliver(consensus.VoteResponse(node.core.term, "a2", True))
        await until(lambda: node.role == "leader", "leadership")

    def depose(self) -> None:
        """a3 leads a newer term."""
        self.node.deliver(consensus.AppendRequest(self.node.core.term + 1, "a3", 0, 0, 0))


def write_forever(db: LocalMariaDB, stop: threading.Event) -> None:
    """Commit rows until told to stop or the server goes (each commit waits for an ACK)."""
    try:
        conn = db.connect()
        with conn.cursor() as cursor:
            while not stop.is_set():
                cursor.execute("INSERT INTO t.x VALUES ()")
    except pymysql.err.MySQLError:
        pass


def kill_dump(db: LocalMariaDB) -> None:
    for (ident,) in db.query("SELECT ID FROM information_schema.PROCESSLIST "
                             "WHERE COMMAND LIKE 'Binlog Dump%'"):
        db.query(f"KILL {int(ident)}")


async def test_a_sessions_threads_end_with_it(primary: LocalMariaDB, tmp_path: Path) -> None:
    store = walstore.WalStore.open(tmp_path / "wal")
    leader = Leader(store)
    source = MariaDBSource(MariaDBConfig(port=primary.port, enabled=True), "a1", leader.node,
                           store)
    stop = threading.Event()
    writer = threading.Thread(target=write_forever, args=(primary, stop), daemon=True,
                              name="test-writer")
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(leader.node.run)
            for peer in ("a2", "a3"):  # a brand-new cluster: a1 may lead it
                leader.node.deliver(consensus.VoteRequest(1, peer, 0, 0, pre_vote=True))
            await until(lambda: not leader.node.core.rebuilding, "a1 to know the cluster")
            await leader.elect()
            writer.start()
            baseline = threading.active_count()
            counts = []

            async def one_session(end: Callable[[], None]) -> None:
                transactions = source.status.transactions
                ended = trio.Event()
                left: list[object] = []

                async def session() -> None:
                    try:
                        await source._session((primary.host, primary.port))
                    except* (ReplicationError, pymysql.err.MySQLError, OSError, EOFError):
                        pass  # the connection was killed
                    # At once, before any other task or thread gets a turn.
                    left.extend((source_threads(), [name for name in default_limiter_borrowers()
                                                    if name in SOURCE_THREADS]))
                    ended.set()

                nursery.start_soon(session)
                # Mid-stream: the writer's commits go through the session and are ACKed.
                await until(lambda: source.status.transactions >= transactions + 20,
                            "commits through the session")
                end()
                await until(ended.is_set, "the session to end", 10)
                assert left == [[], []], "threads of the ended session still run"
                await store.wait_idle()  # the WAL's fsync worker: the limiter's other user
                assert trio.to_thread.current_default_thread_limiter().borrowed_tokens == 0
                counts.append(threading.active_count())

            for _ in range(ROUNDS):
                await one_session(lambda: kill_dump(primary))
            for _ in range(ROUNDS):
                await one_session(leader.depose)
                assert leader.node.role != "leader"
                await leader.elect()
            assert max(counts) <= baseline + SPARE_THREADS, (baseline, counts)
            assert counts[-1] <= counts[0] + 1, f"threads grow with sessions: {counts}"
            assert source.status.acks > 0
            nursery.cancel_scope.cancel()
    finally:
        stop.set()
        store.close()
