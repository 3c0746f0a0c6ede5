"""A replica written to around the agents (a privileged client bypasses read_only) holds a
transaction the quorum never committed: status names it by GTID, its agent refuses to
replicate over it or reset it, and a failover never promotes it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.failover.test_failover import group_of_three, ids, primary_of, start_group
from tests.support.cluster import wait_until

pytestmark = pytest.mark.mariadb


async def test_an_errant_replica_is_named_and_never_promoted(tmp_path: Path) -> None:
    servers, cluster = group_of_three(tmp_path)
    primary, errant, clean = servers["a1"], servers["a2"], servers["a3"]
    try:
        await start_group(primary, cluster)
        primary.query("INSERT INTO w.t VALUES (1), (2), (3)")
        target = primary.variable("gtid_binlog_pos")
        for db in (errant, clean):
            await wait_until(lambda db=db: db.variable("gtid_slave_pos") == target, 30,
                             "the replicas to catch up", cluster.logs)
        errant.query("INSERT INTO w.t VALUES (1000)")  # root: read_only does not stop it
        stray = errant.variable("gtid_binlog_pos").split(",")[-1]
        assert stray.startswith("0-2-"), stray
        # The primary commits on: its agents' history passes the stray's sequence number
        # without it, so the stray can be nothing but errant.
        primary.query("INSERT INTO w.t VALUES (4)")
        await wait_until(lambda: clean.variable("gtid_slave_pos")
                         == primary.variable("gtid_binlog_pos"), 30, "the clean replica",
                         cluster.logs)

        def server_of(node: str) -> dict[str, Any]:
            leader = cluster.leader()
            status = (cluster.agents[leader].timeline() or {}) if leader else {}
            return next((s for s in status.get("servers") or [] if s["node"] == node), {})

        fenced = await wait_until(lambda: (s := server_of("a2")).get("role") == "fenced" and s,
                                  30, "the errant replica to be named", cluster.logs)
        assert stray in fenced["error"], fenced
        keeper = await wait_until(
            lambda: (k := (cluster.agents["a2"].timeline() or {}).get("keeper") or {})
            .get("role") == "refused" and k, 30, "a2's keeper to refuse", cluster.logs)
        assert stray in keeper["error"] and "never committed" in keeper["error"], keeper

        primary.kill()  # the errant replica is as advanced as any: it is still not chosen
        await wait_until(lambda: primary_of(cluster) == ("127.0.0.1", clean.port), 60,
                         "the failover to the clean replica", cluster.logs)
        assert ids(clean) == [1, 2, 3, 4]
        # Untouched: still read-only, its stray row and position kept for the operator.
        assert errant.variable("read_only") == "1"
        assert 1000 in ids(errant) and stray in errant.variable("gtid_binlog_pos")
    finally:
        cluster.stop()
        for db in servers.values():
            db.cleanup()
