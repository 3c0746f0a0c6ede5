"""Jepsen-style: five failovers in a row under a writer with unique ids, each new primary
killed (kill -9) in turn, each killed server restarted fenced (`--init-rpl-role=SLAVE
--read-only=ON`) and rejoining as a replica before the next kill.

The history is checked against what the servers and agents hold: every acknowledged id on
the final primary, none twice, none never sent; no server holds a GTID the agents never
committed (each server's binlog, GTID by GTID, against the agents' committed WAL, and each
server's position equal to the quorum's); the same checksum on all three servers.

The writer is `app`, with INSERT and SELECT on w.* only: without READ_ONLY ADMIN, a server
the agents keep read-only refuses its writes (root would bypass read_only).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from agent.harness.local_mariadb import LocalMariaDB
from tests.replicas.test_stock_replica import checksum
from tests.support.cluster import Cluster, wait_until
from tests.support.group import (
    APP_PASSWORD,
    APP_USER,
    Writer,
    binlog_gtids,
    committed_wal_gtids,
    covers,
    group_of_three,
    ids,
    keeper,
    leader_status,
    more_commits,
    recorded_primary,
    restart_fenced,
    server_at,
    start_group,
)

pytestmark = pytest.mark.mariadb

ROUNDS = 5
COMMITS_PER_PRIMARY = 100


async def kill_and_rejoin(cluster: Cluster, servers: dict[str, LocalMariaDB], writer: Writer,
                          lost: tuple[str, int], round_no: int) -> tuple[tuple[str, int], str]:
    """kill -9 of the primary at LOST under the writer; once another is ready (with every id
    acknowledged before the kill), LOST restarts fenced and rejoins through its agent. The
    new primary's address, and what happened."""
    node_of = {("127.0.0.1", db.port): node for node, db in servers.items()}
    await more_commits(writer, COMMITS_PER_PRIMARY, cluster, f"on {node_of[lost]}'s server")
    old = server_at(servers, lost)
    before_kill = old.variable("gtid_binlog_pos")
    acked_before = list(writer.acked)
    killed_at = time.monotonic()
    old.kill()  # SIGKILL of the primary, mid-load

    primary = await wait_until(lambda: (p := recorded_primary(cluster)) and p != lost and p, 60,
                               f"failover {round_no}", cluster.logs)
    ready_s = time.monotonic() - killed_at
    new = server_at(servers, primary)
    missing = sorted(set(acked_before) - set(ids(new)))
    assert not missing, (f"failover {round_no}: acknowledged ids missing on the new primary: "
                         f"{missing[:10]}")

    # The killed server comes back fenced, and rejoins through its own agent.
    restart_fenced(old)
    after_restart = old.variable("gtid_binlog_pos")
    target = new.variable("gtid_binlog_pos")
    await wait_until(lambda: covers(old.variable("gtid_binlog_pos"), target), 60,
                     f"{node_of[lost]}'s server to rejoin and reach {target}", cluster.logs)
    assert old.variable("read_only") == "1"
    assert keeper(cluster, node_of[lost]).get("role") == "replica"
    return primary, (f"round {round_no}: {node_of[lost]}'s server killed at {before_kill}, "
                     f"restarted at {after_restart}; {node_of[primary]}'s ready after "
                     f"{ready_s:.2f}s; rejoined after {time.monotonic() - killed_at:.2f}s")


async def test_five_successive_failovers_lose_nothing(tmp_path: Path) -> None:
    servers, cluster = group_of_three(tmp_path)
    writer = Writer(cluster, APP_USER, APP_PASSWORD)
    node_of = {("127.0.0.1", db.port): node for node, db in servers.items()}
    try:
        await start_group(servers["a1"], cluster, app_user=True)
        writer.start()
        primary = ("127.0.0.1", servers["a1"].port)
        primaries = [node_of[primary]]
        figures: list[str] = []
        for round_no in range(1, ROUNDS + 1):
            primary, figure = await kill_and_rejoin(cluster, servers, writer, primary, round_no)
            primaries.append(node_of[primary])
            figures.append(figure)

        await more_commits(writer, COMMITS_PER_PRIMARY, cluster, "on the last primary")
        writer.finish()
        final = server_at(servers, primary)
        status = leader_status(cluster)
        assert status["failover"]["epoch"] >= ROUNDS + 1
        print("\n".join(figures))
        print(f"primaries in turn: {' -> '.join(primaries)}; {len(writer.acked)} acknowledged, "
              f"{len(writer.attempted)} sent, writer errors {writer.errors}, per server "
              f"{writer.acked_on}; epoch {status['failover']['epoch']}")

        on_final = ids(final)
        assert len(on_final) == len(set(on_final))  # none twice
        missing = sorted(set(writer.acked) - set(on_final))
        assert not missing, f"acknowledged ids missing on the final primary: {missing[:10]}"
        invented = sorted(set(on_final) - set(writer.attempted))
        assert not invented, f"ids no client sent: {invented[:10]}"

        # Every server at the quorum's position, no further: nothing errant.
        committed = await wait_until(
            lambda: (c := leader_status(cluster).get("committed_gtid"))
            and all(db.variable("gtid_binlog_pos") == c for db in servers.values()) and c,
            60, "every server at the quorum's committed position",
            lambda: cluster.logs() + "\n" + "\n".join(
                f"{n}: {db.variable('gtid_binlog_pos')}" for n, db in servers.items()))
        sums = {node: checksum(db, "w.t") for node, db in servers.items()}
        assert len(set(sums.values())) == 1, sums

        # GTID by GTID: what each server's binlog holds, against the agents' committed WAL.
        histories = {node: binlog_gtids(db) for node, db in servers.items()}
        cluster.stop()
        wal = set().union(*(committed_wal_gtids(cluster, node) for node in cluster.agents))
        for node, history in histories.items():
            assert len(history) == len(set(history)), f"{node}'s binlog repeats a GTID"
            errant = [gtid for gtid in history if gtid not in wal]
            assert not errant, f"{node}'s server holds GTIDs never committed: {errant}"
        assert len({tuple(h) for h in histories.values()}) == 1, "binlog histories differ"
        print(f"committed {committed}: {len(wal)} GTIDs in the agents' WAL; every server's "
              f"binlog holds {len(histories['a1'])} of them, in the same order; "
              f"checksum {sums['a1']}")
    finally:
        writer.finish()
        cluster.stop()
        for db in servers.values():
            db.cleanup()
