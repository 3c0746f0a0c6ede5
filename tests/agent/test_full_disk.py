"""The full disk, for real: three agent processes under a synthetic load, each data_dir on
its own small tmpfs; one of them is filled to the last byte with a ballast file.

That agent stays up, says `disk_full` with the error in `/v1/status` and stops
acknowledging; the other two keep committing (a full leader hands leadership over). Once
the ballast is deleted it catches up by itself, and afterwards every WAL verifies."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.cluster import AgentProcess, Cluster, wait_until
from tests.support.disks import fill, mount_tmpfs, unmount

pytestmark = pytest.mark.slow

LOAD = ["--synthetic-load", "200:1024:4"]  # about 200 KB/s: 8 MiB lasts the test
DISK = "16m"
PROGRESS = 512 << 10  # commit progress that proves the other two go on without it


@pytest.fixture
def small_disks(tmp_path: Path) -> Iterator[Path]:
    """tmp_path/a1..a3 (the cluster's data dirs), each a tmpfs of its own; unmounted after."""
    mounted: list[Path] = []
    try:
        for node_id in ("a1", "a2", "a3"):
            mount_tmpfs(tmp_path / node_id, DISK)
            mounted.append(tmp_path / node_id)
        yield tmp_path
    finally:
        for directory in mounted:
            unmount(directory)


def timeline(agent: AgentProcess) -> dict[str, Any]:
    return agent.timeline() or {}


def commit(agent: AgentProcess) -> int:
    return int(timeline(agent).get("commit_lsn", -1))


def verify(data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent", "wal", "verify", str(data_dir)],
                          capture_output=True, text=True)


async def fill_and_recover(cluster: Cluster, victim: str) -> None:
    """Fill VICTIM's disk, check the other two commit without it, free it, and wait until
    it caught up; then stop everything and verify every WAL."""
    full = cluster.agents[victim]
    others = [cluster.agents[n] for n in cluster.agents if n != victim]
    ballast = fill(full.data_dir)
    filled = time.monotonic()
    status = await wait_until(lambda: (t := timeline(full)).get("disk_full") and t, 15,
                              f"{victim} to report its disk full", cluster.logs)
    assert "no space left" in status["disk_error"] and str(full.data_dir) in status["disk_error"]
    stuck = status["flush_lsn"]
    noticed = time.monotonic()

    # The other two commit without it (a full leader has handed leadership over).
    leader = await wait_until(lambda: cluster.leader([o.node_id for o in others]), 15,
                              "a leader among the other two", cluster.logs)
    start = commit(cluster.agents[leader])
    await wait_until(lambda: all(commit(o) > start + PROGRESS for o in others), 30,
                     "the other two to keep committing", cluster.logs)
    assert full.alive, full.log_tail()
    status = timeline(full)
    assert status["disk_full"] and status["flush_lsn"] <= stuck  # nothing more acknowledged
    member = next(m for m in timeline(cluster.agents[leader])["members"] if m["id"] == victim)
    assert member["match_lsn"] is None or member["match_lsn"] <= stuck
    errors = [line for line in full.log_path.read_text().splitlines()
              if "ERROR" in line and "no space left" in line]
    assert len(errors) == 1, errors  # one clear error, not one per retry
    shown = subprocess.run([sys.executable, "-m", "agent", "status", "--url", full.url],
                           capture_output=True, text=True, timeout=60)
    assert "DISK FULL: not acknowledging" in shown.stdout, (shown.stdout, shown.stderr)

    ballast.unlink()
    freed, target = time.monotonic(), commit(cluster.agents[leader])
    await wait_until(lambda: (t := timeline(full)).get("flush_lsn", -1) >= target
                     and t.get("commit_lsn", -1) >= target and not t["disk_full"], 30,
                     f"{victim} to catch up once there is room", cluster.logs)
    assert full.alive
    print(f"{victim}: disk full noticed in {noticed - filled:.2f}s; "
          f"{(target - start) >> 10} KiB committed without it; caught up "
          f"{(target - stuck) >> 10} KiB {time.monotonic() - freed:.2f}s after the ballast went")
    cluster.stop()
    for agent in cluster.agents.values():
        done = verify(agent.data_dir)
        assert done.returncode == 0, f"{agent.node_id}: {done.stdout}{done.stderr}"


async def start_with_history(cluster: Cluster) -> str:
    """Start CLUSTER; returns its leader once some history is committed."""
    cluster.start()
    leader: str = await wait_until(cluster.leader, 15, "a leader", cluster.logs)
    await wait_until(lambda: commit(cluster.agents[leader]) > PROGRESS, 15, "some history",
                     cluster.logs)
    return leader


async def test_a_full_follower_stops_acking_and_catches_up(small_disks: Path) -> None:
    cluster = Cluster(small_disks, 3, extra_args=LOAD, use_proxies=False)
    try:
        leader = await start_with_history(cluster)
        victim = next(n for n in cluster.agents if n != leader)
        await fill_and_recover(cluster, victim)
    finally:
        cluster.stop()


async def test_a_full_leader_hands_over_and_catches_up(small_disks: Path) -> None:
    cluster = Cluster(small_disks, 3, extra_args=LOAD, use_proxies=False)
    try:
        leader = await start_with_history(cluster)
        await fill_and_recover(cluster, leader)
        log = cluster.agents[leader].log_path.read_text()
        assert "the disk is full: handing leadership to" in log
    finally:
        cluster.stop()
