"""A MariaDB primary with semi-sync on and 3 agents tailing it that serve replicas."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from agent.harness.local_mariadb import LocalMariaDB
from tests.mariadb.test_semisync import enable_semi_sync
from tests.support.cluster import Cluster, wait_tailing


@asynccontextmanager
async def primary_with_serving_agents(
    tmp_path: Path, tls_dir: Path | None = None, **replication: int | bool
) -> AsyncIterator[tuple[LocalMariaDB, Cluster, str]]:
    """Yields (primary, cluster, id of the leader tailing it); REPLICATION adds settings to
    the agents' [replication] table, TLS_DIR gives them [tls] (tests/support/certs.py).
    Everything is stopped and removed after."""
    primary = LocalMariaDB(tmp_path / "primary").start()
    cluster = Cluster(tmp_path / "agents", 3, use_proxies=False, mariadb_port=primary.port,
                      serve_replicas=True, replication=replication or None, tls_dir=tls_dir)
    try:
        enable_semi_sync(primary)
        cluster.start()
        yield primary, cluster, await wait_tailing(cluster)
    finally:
        cluster.stop()
        primary.cleanup()
