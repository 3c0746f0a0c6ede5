"""`GET /metrics` on three real agents: under a synthetic load, open even with admin tokens
configured, the series docs/metrics.md lists with sane values on the leader and the
followers; tailing a real semi-sync primary and serving a live replica, the source's and
the replicas' series. `promtool check metrics` (Debian's prometheus package; `./run test`
installs it) accepts every output."""

from __future__ import annotations

import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent.mariadb.binaries import find_binary
from agent.node.lag import MemberLag
from agent.ops.auth import issue_token
from tests.replicas.support import primary_with_serving_agents
from tests.support.cluster import (
    REPLICATION_PASSWORD,
    REPLICATION_USER,
    Cluster,
    wait_until,
)

LOAD = ["--synthetic-load", "100:200:2"]
SECRET = b"0123456789abcdef0123456789abcdef-metrics"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str, accept: str | None = None) -> str:
    request = urllib.request.Request(url + "/metrics")  # no token: /metrics is open
    if accept is not None:
        request.add_header("Accept", accept)
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200
        return response.read().decode()


def parse(text: str) -> Samples:
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    key = (name, frozenset({"timeline": "main", **labels}.items()))
    if key not in samples:  # agent-wide series have no timeline label
        key = (name, frozenset(labels.items()))
    assert key in samples, f"no {name}{labels} in the scrape"
    return samples[key]


def names(samples: Samples) -> set[str]:
    return {name for name, _labels in samples}


def maybe_scrape(url: str) -> Samples | None:
    try:
        return parse(scrape(url))
    except OSError:  # not listening yet
        return None


def promtool() -> str:
    path = shutil.which("promtool") or shutil.which("promtool", path="/usr/bin")
    if path is None:  # not a skip: CI must run this check (./run test installs it)
        pytest.fail("promtool is missing: apt-get install prometheus (./run test does)")
    return path


def check_with_promtool(text: str) -> None:
    result = subprocess.run([promtool(), "check", "metrics"], input=text, text=True,
                            capture_output=True, timeout=60)
    assert result.returncode == 0, f"promtool: {result.stdout}{result.stderr}\n{text}"


def post(url: str, token: str) -> int:
    request = urllib.request.Request(url, method="POST", data=b"")
    request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=5) as response:
        return int(response.status)


def status_without_token(url: str) -> int:
    try:
        with urllib.request.urlopen(url + "/v1/status", timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


async def test_metrics_of_a_live_cluster(tmp_path: Path) -> None:
    promtool()  # fail first, not after a minute of cluster, when it is missing
    cluster = Cluster(tmp_path, 3, extra_args=LOAD, use_proxies=False, serve_replicas=True)
    secret_file = tmp_path / "admin.secret"
    secret_file.write_bytes(SECRET)
    for agent in cluster.agents.values():  # tokens on: everything but /healthz, /metrics
        with agent.config_path.open("a") as config:
            config.write(f'[admin]\njwt_secret_file = "{secret_file}"\n')
    urls = {node: agent.url for node, agent in cluster.agents.items()}
    cluster.start()
    try:
        def one_leader() -> tuple[str, dict[str, Samples]] | None:
            scraped = {node: maybe_scrape(url) for node, url in urls.items()}
            if any(s is None for s in scraped.values()):
                return None
            ready = {node: s for node, s in scraped.items() if s is not None}
            leaders = [n for n, s in ready.items() if value(s, "binkeeper_is_leader") == 1]
            return (leaders[0], ready) if len(leaders) == 1 else None

        leader, first = await wait_until(one_leader, 30, "exactly one leader in /metrics",
                                         cluster.logs)
        followers = sorted(set(urls) - {leader})
        for node in followers:
            assert value(first[node], "binkeeper_is_leader") == 0
        assert status_without_token(urls[leader]) == 401  # the token check is on

        # Under load the leader's commit histogram and LSNs move.
        commits_before = value(first[leader], "binkeeper_commit_seconds_count")

        def moved() -> Samples | None:
            samples = maybe_scrape(urls[leader])
            if samples is None or value(samples, "binkeeper_is_leader") != 1:
                return None
            return samples if (value(samples, "binkeeper_commit_seconds_count")
                               >= commits_before + 50) else None

        lead = await wait_until(moved, 30, "50 more commits in the leader's histogram",
                                cluster.logs)
        assert value(lead, "binkeeper_commit_lsn") > 0
        assert value(lead, "binkeeper_role", role="leader") == 1
        assert value(lead, "binkeeper_role", role="follower") == 0
        assert value(lead, "binkeeper_elections_won_total") >= 1
        assert value(lead, "binkeeper_wal_flush_seconds_count") > 0
        assert value(lead, "binkeeper_event_loop_lag_seconds_count") > 0
        assert value(lead, "binkeeper_commit_seconds_sum") > 0
        for node in followers:  # the leader knows its followers; lag is sane
            assert value(lead, "binkeeper_member_match_lsn", member=node) > 0
            assert 0 <= value(lead, "binkeeper_member_lag_bytes", member=node)
            assert 0 <= value(lead, "binkeeper_member_lag_seconds", member=node) < 30
            sent = value(lead, "binkeeper_peer_bytes_total", peer=node, direction="sent")
            assert sent > 0
            assert value(lead, "binkeeper_peer_sent_uncompressed_bytes_total", peer=node) > 0
            assert value(lead, "binkeeper_peer_connected", peer=node) == 1
        assert value(lead, "binkeeper_wal_size_bytes") > 0
        assert 0 < value(lead, "binkeeper_wal_disk_available_bytes") <= value(
            lead, "binkeeper_wal_disk_size_bytes")
        assert value(lead, "binkeeper_wal_disk_full") == 0
        assert value(lead, "binkeeper_replica_connections") == 0
        for kind in ("peer_protocol", "handshake_refused", "disk_full", "source_session"):
            assert value(lead, "binkeeper_errors_total", kind=kind) == 0
        assert value(lead, "binkeeper_failovers_total", reason="failover") == 0
        assert value(lead, "binkeeper_agent_info", node_id=leader, version=_version(lead)) == 1

        # Stop the load; then every agent's metrics show the same commit LSN.
        assert post(urls[leader] + "/v1/synthetic/stop", issue_token(SECRET, "admin", 60)) == 200

        def settled() -> dict[str, Samples] | None:
            scraped = {node: maybe_scrape(url) for node, url in urls.items()}
            ready = {node: s for node, s in scraped.items() if s is not None}
            if len(ready) < len(urls):
                return None
            commits = {value(s, "binkeeper_commit_lsn") for s in ready.values()}
            flushes = {value(s, "binkeeper_flush_lsn") for s in ready.values()}
            # ... and the leader has heard every follower's acknowledgement of it
            acked = all(value(ready[leader], "binkeeper_member_lag_bytes", member=node) == 0
                        for node in followers)
            return ready if len(commits) == 1 and commits == flushes and acked else None

        final = await wait_until(settled, 30, "one commit LSN on every agent", cluster.logs)
        lead = final[leader]
        commit = value(lead, "binkeeper_commit_lsn")
        assert commit > value(first[leader], "binkeeper_commit_lsn")
        for node in followers:
            samples = final[node]
            assert value(samples, "binkeeper_role", role="follower") == 1
            assert value(samples, "binkeeper_last_lsn") == commit
            assert value(samples, "binkeeper_term") == value(lead, "binkeeper_term")
            assert value(samples, "binkeeper_leader_changes_total") >= 1
            assert value(samples, "binkeeper_wal_flush_seconds_count") > 0
            received = value(samples, "binkeeper_peer_bytes_total", peer=leader,
                             direction="received")
            assert received > 0
            # only the leader knows members' progress
            assert "binkeeper_member_match_lsn" not in names(samples)
            # caught up once the load stopped: no lag in seconds either
            assert value(lead, "binkeeper_member_lag_seconds", member=node) == 0

        # promtool accepts every agent's output; OpenMetrics is offered when asked for.
        for url in urls.values():
            check_with_promtool(scrape(url))
        openmetrics = scrape(urls[leader], "application/openmetrics-text; version=1.0.0")
        assert openmetrics.rstrip().endswith("# EOF")
    finally:
        cluster.stop()


@pytest.mark.mariadb
async def test_metrics_of_the_source_and_a_replica(tmp_path: Path) -> None:
    promtool()
    async with primary_with_serving_agents(tmp_path) as (primary, cluster, leader):
        url = cluster.agents[leader].url
        primary.query("CREATE DATABASE m")
        primary.query("CREATE TABLE m.t (id INT PRIMARY KEY)")
        for i in range(20):  # each COMMIT returns once the quorum has it: ACKed
            primary.query("INSERT INTO m.t VALUES (%s)", i)
        samples = parse(scrape(url))
        assert value(samples, "binkeeper_source_connected") == 1
        assert value(samples, "binkeeper_source_transactions_total") >= 22
        assert value(samples, "binkeeper_source_acks_total") >= 22
        assert value(samples, "binkeeper_primary_ack_wait_seconds_count") >= 22
        assert value(samples, "binkeeper_primary_ack_wait_seconds_sum") > 0
        assert value(samples, "binkeeper_errors_total", kind="source_session") == 0

        # A live replica (mariadb-binlog that never stops) on the leader's port.
        follower = next(node for node in cluster.agents if node != leader)
        port = cluster.agents[follower].mysql_port
        replica_log = tmp_path / "replica.log"
        with replica_log.open("wb") as errors:
            replica = subprocess.Popen(
                [find_binary("mariadb-binlog"), "--read-from-remote-server",
                 "--host=127.0.0.1", f"--port={port}", f"--user={REPLICATION_USER}",
                 f"--password={REPLICATION_PASSWORD}", "--stop-never",
                 "--stop-never-slave-server-id=4242", primary.binlog_files()[0].name],
                stdout=subprocess.DEVNULL, stderr=errors)
        follower_url = cluster.agents[follower].url
        try:
            def caught_up() -> Samples | None:
                samples = parse(scrape(follower_url))
                key = ("binkeeper_replica_lag_bytes",
                       frozenset({"timeline": "main", "server_id": "4242"}.items()))
                return samples if samples.get(key) == 0 else None

            primary.query("INSERT INTO m.t VALUES (100)")
            samples = await wait_until(caught_up, 30, "the replica to be served everything",
                                       lambda: cluster.logs() + replica_log.read_text())
            assert value(samples, "binkeeper_replica_connections") == 1
            assert value(samples, "binkeeper_replica_connections_total") >= 1
            assert value(samples, "binkeeper_replica_sent_bytes_total") > 0
            assert value(samples, "binkeeper_replica_lag_seconds", server_id="4242") == 0
            check_with_promtool(scrape(follower_url))
        finally:
            replica.terminate()
            replica.wait(10)
        check_with_promtool(scrape(url))


class _Progress:
    def __init__(self, match_lsn: int) -> None:
        self.match_lsn = match_lsn


def test_member_lag_seconds_bounds_the_age_of_a_members_position() -> None:
    """A leader appends 100 bytes every 10 ms; one follower acknowledges what the leader
    had 50 ms earlier, another stops at 0.5 s. Looked at every millisecond (as the node
    loop does each pass), the first's lag stays within one round trip above the true age
    of its position; the stopped one's grows with the time since it stopped."""
    lag, delay, step = MemberLag(), 0.05, 0.01

    def end_at(t: float) -> int:
        return 100 * int(t / step + 1e-9) if t >= 0 else 0

    for ms in range(2001):
        now = ms / 1000
        end = end_at(now)
        live, stopped = end_at(now - delay), end_at(min(now, 0.5))
        lag.observe(now, end, {"live": _Progress(live), "stopped": _Progress(stopped)})
        if now < 0.2:
            continue  # the first round trips after taking over count from then
        live_lag = lag.seconds("live", now, end, live)
        stopped_lag = lag.seconds("stopped", now, end, stopped)
        assert live_lag is not None and stopped_lag is not None
        if live < end:
            # its position is between `delay` and `delay + step` old
            assert delay - step <= live_lag <= 2 * delay + 2 * step, (now, live_lag)
        else:
            assert live_lag == 0
        if now > 0.5 + step:
            assert now - 0.5 - step <= stopped_lag <= now - 0.5 + delay + step, now
    assert lag.seconds("nobody", 1.0, 100, 0) is None
    lag.reset()  # leadership lost
    assert lag.seconds("live", 2.0, 100, 0) is None


def _version(samples: Samples) -> str:
    infos: Iterable[frozenset[tuple[str, str]]] = (
        labels for name, labels in samples if name == "binkeeper_agent_info")
    return dict(next(iter(infos)))["version"]
