"""Three real agent processes (`binkeeper run`'s agent with the harness's synthetic load)
on loopback under a steady synthetic append load.

Faults are real: kill -9, a TCP proxy that cuts every link of one agent, a data directory
emptied while the agent is down.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import trio

from tests.support.cluster import Cluster, wait_until

pytestmark = pytest.mark.slow

TICK_MS = 50
ELECTION_TICKS = 10
# The default election timeout is randomized in [1, 2) x election_ticks ticks.
ELECTION_TIMEOUT_MAX = 2 * ELECTION_TICKS * TICK_MS / 1000
LOAD = ["--synthetic-load", "100:200:2"]


def commit_of(cluster: Cluster, node_id: str) -> int:
    timeline = cluster.agents[node_id].timeline()
    return -1 if timeline is None else int(timeline["commit_lsn"])


async def start_cluster(tmp_path: Path, nursery: trio.Nursery) -> Cluster:
    cluster = Cluster(tmp_path, 3, extra_args=LOAD)
    for proxy in cluster.proxies.values():
        await nursery.start(proxy.serve)
    cluster.start()
    await wait_until(cluster.leader, 15, "a leader", cluster.logs)
    return cluster


async def wait_commits_grow(cluster: Cluster, node_id: str, by: int, timeout: float) -> None:
    start = commit_of(cluster, node_id)
    await wait_until(
        lambda: commit_of(cluster, node_id) >= start + by,
        timeout,
        f"{node_id}'s commit LSN to grow by {by} from {start}",
        cluster.logs,
    )


def propose_change(cluster: Cluster, node_id: str, timeline: str) -> int:
    """POST a membership change (a learner nobody runs) to NODE_ID; its HTTP status."""
    body = json.dumps({"action": "add_learner", "id": "zz", "addr": "127.0.0.1:9"}).encode()
    request = urllib.request.Request(
        f"{cluster.agents[node_id].url}/v1/timelines/{timeline}/members", data=body,
        method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return -1  # the agent was stopped first


def stop_load(cluster: Cluster) -> None:
    for agent in cluster.agents.values():
        if agent.alive:
            request = urllib.request.Request(agent.url + "/v1/synthetic/stop", method="POST")
            urllib.request.urlopen(request, timeout=5).close()


async def converge(cluster: Cluster) -> int:
    """Stop the load, wait until every agent holds the same durable, committed log."""
    await trio.to_thread.run_sync(stop_load, cluster)

    def settled() -> int | None:
        timelines = [a.timeline() for a in cluster.agents.values()]
        if any(t is None for t in timelines):
            return None
        points = {(t["commit_lsn"], t["flush_lsn"], t["last_lsn"]) for t in timelines}  # type: ignore[index]
        if len(points) != 1:
            return None
        commit, flush, last = points.pop()
        return commit if commit == flush == last and commit > 0 else None

    lsn: int = await wait_until(settled, 20, "all agents to converge", cluster.logs)
    return lsn


def dump(data_dir: Path) -> list[str]:
    [timeline_dir] = (data_dir / "timelines").iterdir()
    out = subprocess.run(
        [sys.executable, "-m", "agent", "wal", "dump", "--payload-sha", str(timeline_dir)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [line for line in out.splitlines() if line and line[0].isdigit()]


def assert_identical_history(cluster: Cluster) -> None:
    cluster.stop()
    dumps = {name: dump(agent.data_dir) for name, agent in cluster.agents.items()}
    first = next(iter(dumps.values()))
    assert len(first) > 10
    for name, lines in dumps.items():
        assert lines == first, f"{name}'s history differs"


async def test_follower_kill_leader_kill_and_rebuild(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        cluster = await start_cluster(tmp_path, nursery)
        try:
            leader = cluster.leader()
            assert leader is not None
            await wait_commits_grow(cluster, leader, 5_000, 15)

            # kill -9 a follower: commits continue on the remaining majority
            follower = next(n for n in cluster.agents if n != leader)
            cluster.agents[follower].kill()
            await wait_commits_grow(cluster, leader, 5_000, 10)
            cluster.agents[follower].start()

            # kill -9 the leader: a new leader commits within 2 s of the election timeout
            await wait_until(lambda: cluster.agents[follower].timeline(), 10, "restart")
            cluster.agents[leader].kill()
            survivors = [n for n in cluster.agents if n != leader]
            before = max(commit_of(cluster, n) for n in survivors)
            new_leader: str = await wait_until(
                lambda: cluster.leader(survivors),
                ELECTION_TIMEOUT_MAX + 2,
                "a new leader",
                cluster.logs,
            )
            await wait_until(
                lambda: commit_of(cluster, new_leader) > before,
                ELECTION_TIMEOUT_MAX + 2,
                "the new leader to commit",
                cluster.logs,
            )
            cluster.agents[leader].start()

            # an agent whose data directory is emptied is rebuilt from its peers
            victim = next(n for n in cluster.agents if n != new_leader)
            cluster.agents[victim].stop()
            shutil.rmtree(cluster.agents[victim].data_dir)
            cluster.agents[victim].data_dir.mkdir()
            cluster.agents[victim].start()
            await wait_until(
                lambda: (
                    (t := cluster.agents[victim].timeline()) is not None
                    and t["flush_lsn"] >= commit_of(cluster, new_leader) > 0
                ),
                20,
                f"{victim} to be rebuilt",
                cluster.logs,
            )
            await converge(cluster)
            assert_identical_history(cluster)
        finally:
            cluster.stop()
            nursery.cancel_scope.cancel()


async def test_partitioned_leader_commits_nothing(tmp_path: Path) -> None:
    """From the moment it is cut off, a leader commits nothing it appends: watched from the
    cut itself — while it still believes it leads and keeps appending the load, through its
    step-down — until the majority's new leader has committed plenty."""
    async with trio.open_nursery() as nursery:
        cluster = await start_cluster(tmp_path, nursery)
        try:
            old = cluster.leader()
            assert old is not None
            await wait_commits_grow(cluster, old, 2_000, 15)
            cluster.partition(old)
            cut = cluster.agents[old].timeline()
            assert cut is not None and cut["role"] == "leader"
            # Acks already on their way may still commit what it had appended by the cut;
            # nothing it appends after the cut reaches a follower, so nothing beyond commits.
            bound = int(cut["last_lsn"])
            seen: list[tuple[int, int, str]] = []  # (commit, last LSN, role) of the old leader
            # Its load's proposers all wait on commits that cannot come, so make it append
            # after the cut for sure: a membership change (it never commits; the request
            # ends when the old leader steps down).
            nursery.start_soon(trio.to_thread.run_sync, propose_change, cluster, old,
                               str(cut["timeline_id"]))

            def watch() -> None:
                timeline = cluster.agents[old].timeline()
                if timeline is not None:
                    seen.append((int(timeline["commit_lsn"]), int(timeline["last_lsn"]),
                                 str(timeline["role"])))

            majority = [n for n in cluster.agents if n != old]
            new: str = await wait_until(
                lambda: (watch(), cluster.leader(majority))[1],
                ELECTION_TIMEOUT_MAX + 5,
                "a majority leader",
                cluster.logs,
            )
            start = commit_of(cluster, new)
            await wait_until(
                lambda: (watch(), commit_of(cluster, new) >= start + 5_000)[1],
                15,
                "the majority to commit 5,000 more bytes",
                cluster.logs,
            )
            assert max(last for _c, last, role in seen if role == "leader") > bound, (
                "the old leader appended nothing after the cut: nothing was tested")
            assert max(commit for commit, _l, _r in seen) <= bound, (
                f"the cut-off leader committed beyond {bound}, what it held at the cut")
            frozen = max(commit for commit, _l, _r in seen)
            cluster.heal()
            await wait_until(
                lambda: commit_of(cluster, old) > frozen,
                20,
                "the old leader to catch up",
                cluster.logs,
            )
            await converge(cluster)
            assert_identical_history(cluster)
        finally:
            cluster.stop()
            nursery.cancel_scope.cancel()


async def test_leadership_moves_to_the_preferred_agent(tmp_path: Path) -> None:
    """The agent beside the primary (preferred_leader) ends up leading, and keeps committing."""
    cluster = Cluster(tmp_path, 3, extra_args=LOAD, use_proxies=False, preferred_leader="a3")
    cluster.start()
    try:
        await wait_until(lambda: cluster.leader() == "a3", 20, "a3 to lead", cluster.logs)
        await wait_commits_grow(cluster, "a3", 2_000, 15)
        cluster.agents["a3"].kill()  # without it, another agent leads ...
        await wait_until(lambda: cluster.leader(["a1", "a2"]), ELECTION_TIMEOUT_MAX + 2,
                         "a fallback leader", cluster.logs)
        cluster.agents["a3"].start()  # ... until it is back and caught up
        await wait_until(lambda: cluster.leader() == "a3", 20, "a3 to lead again", cluster.logs)
    finally:
        cluster.stop()
