"""Replicas fed by their own agents with committed history only, configured by the agents
(no CHANGE MASTER by hand); a server holding a transaction the quorum never committed is
refused with the GTID named, and left untouched."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent.harness.local_mariadb import LocalMariaDB
from agent.harness.workload import Workload
from tests.mariadb.test_semisync import enable_semi_sync
from tests.replicas.test_stock_replica import checksum
from tests.support.cluster import Cluster, wait_until

pytestmark = pytest.mark.mariadb


def keeper(cluster: Cluster, node: str) -> dict[str, Any]:
    status: dict[str, Any] = (cluster.agents[node].timeline() or {}).get("keeper") or {}
    return status


async def test_replicas_are_kept_replicating_from_their_agents(tmp_path: Path) -> None:
    primary = LocalMariaDB(tmp_path / "p", server_id=1).start()
    replica = LocalMariaDB(tmp_path / "r2", server_id=2, extra_args=["--read-only=ON"]).start()
    errant = LocalMariaDB(tmp_path / "r3", server_id=3, extra_args=["--read-only=ON"]).start()
    cluster = Cluster(tmp_path / "agents", 3, use_proxies=False, serve_replicas=True,
                      mariadb_port={"a1": primary.port, "a2": replica.port,
                                    "a3": errant.port})
    try:
        enable_semi_sync(primary)
        errant.query("CREATE DATABASE stray")  # root bypasses read_only: GTID 0-3-1
        cluster.start()
        workload = Workload(primary.connect, seed=3, accounts=20)
        workload.setup()
        workload.run(30)
        target = primary.variable("gtid_binlog_pos")
        await wait_until(lambda: replica.variable("gtid_slave_pos") == target, 60,
                         f"a2's server to reach {target} through a2", cluster.logs)
        assert checksum(primary, "shop.accounts") == checksum(replica, "shop.accounts")
        status = replica.slave_status()
        assert int(status["Master_Port"]) == cluster.agents["a2"].mysql_port
        assert replica.variable("read_only") == "1"
        assert keeper(cluster, "a2")["role"] == "replica"
        assert keeper(cluster, "a1")["role"] == "primary"
        # the stray transaction is named, and the server left as it was
        refusal = await wait_until(lambda: keeper(cluster, "a3").get("role") == "refused"
                                   and keeper(cluster, "a3"), 30, "a3 to refuse", cluster.logs)
        assert "0-3-1" in refusal["error"] and "never committed" in refusal["error"]
        assert not errant.query("SHOW SLAVE STATUS")
        assert errant.variable("gtid_binlog_pos") == "0-3-1"
    finally:
        cluster.stop()
        for db in (primary, replica, errant):
            db.cleanup()
