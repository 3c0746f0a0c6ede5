"""A follower that stops answering (its process frozen with SIGSTOP, its connections open)
for 60 s under steady load, and a new leader that has never heard from it (so it probes
it with every heartbeat): the leader keeps committing, and its memory stays flat — its
queue to the dead peer is bounded in bytes, its probes to a silent peer carry no records,
its writes have a deadline — instead of growing with everything the dead peer missed (the
issue saw 100 MiB of probes in 10 s)."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
import trio

from tests.agent.test_cluster import commit_of
from tests.agent.test_membership import post
from tests.support.cluster import Cluster, wait_until

pytestmark = pytest.mark.slow

LOAD = ["--synthetic-load", "300:8192:8"]  # about 2.4 MB/s offered
HOLD = 60.0
RSS_BOUND = 48 << 20  # growth of the leader's resident memory while the follower is dead


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def test_a_dead_follower_does_not_bloat_the_leader(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, 3, extra_args=LOAD, use_proxies=False)
    cluster.start()
    try:
        leader: str = await wait_until(cluster.leader, 15, "a leader", cluster.logs)
        await wait_until(lambda: commit_of(cluster, leader) > 4 << 20, 30, "4 MB committed",
                         cluster.logs)
        follower, other = (n for n in cluster.agents if n != leader)
        frozen = cluster.agents[follower].process
        assert frozen is not None
        frozen.send_signal(signal.SIGSTOP)
        try:
            # Leadership moves to the other live agent: it starts with the frozen peer in
            # probe state, and probes it with every heartbeat from then on.
            status, body = await trio.to_thread.run_sync(
                post, f"{cluster.agents[leader].url}/v1/timelines/main/transfer", {"to": other})
            assert status == 200, body
            leader = other
            await wait_until(lambda: cluster.leader([leader, next(
                n for n in cluster.agents if n not in (leader, follower))]) == leader, 15,
                "the new leader", cluster.logs)
            leader_process = cluster.agents[leader].process
            assert leader_process is not None
            await trio.sleep(5)  # the dead peer's queue and probes reach their steady state
            start_rss, start_commit = rss(leader_process.pid), commit_of(cluster, leader)
            deadline, peak = time.monotonic() + HOLD, start_rss
            while time.monotonic() < deadline:
                await trio.sleep(1)
                peak = max(peak, rss(leader_process.pid))
            missed = commit_of(cluster, leader) - start_commit
            print(f"leader RSS {start_rss >> 20} MiB, peak growth {(peak - start_rss) >> 20} MiB, "
                  f"{missed >> 20} MiB committed while the follower was dead")
        finally:
            frozen.send_signal(signal.SIGCONT)
        assert missed > 2 * RSS_BOUND, (
            f"only {missed} bytes committed while the follower was dead: the test proves "
            "nothing unless an unbounded queue would have outgrown the bound")
        assert peak - start_rss <= RSS_BOUND, (
            f"the leader grew by {(peak - start_rss) >> 20} MiB while the follower was dead "
            f"({missed >> 20} MiB committed meanwhile)")
        target = commit_of(cluster, leader)
        await wait_until(lambda: (t := cluster.agents[follower].timeline()) is not None
                         and t["flush_lsn"] >= target, 60, "the follower to catch up",
                         cluster.logs)
    finally:
        cluster.stop()
