"""Prometheus metrics for `GET /metrics` (docs/metrics.md lists every one).

One `CollectorRegistry` per agent — never prometheus_client's global one: tests and the
demo run several agents in one process. Two kinds of series:

- **Read at scrape time** by `_StatusCollector` from what the agent already keeps for
  `/v1/status` (positions, roles, counters, peers, replicas) plus the failover record
  list and the WAL directory's file system: nothing is counted twice, and an idle agent
  does no metrics work between scrapes.
- **Observed where the time is measured** (histograms): the node loop calls
  `observe_flush` / `observe_commit`, the MariaDB source `observe_ack_wait`, the
  loop-health task `observe_loop_lag` — bound `Histogram.observe` methods, a few
  microseconds each, on the event loop.

This module sees plain callables and the status dicts only (the narrow-admin contract in
.importlinter): agent/process.py wires it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

StatusProvider = Callable[[], dict[str, Any]]
# Per timeline id: this leader's failover and switchover records (agent/failover/controller.py
# `failovers`: dicts with `reason` (absent for a failover), `silent_s`, `ready_s`, ...).
FailoversProvider = Callable[[str], Sequence[Mapping[str, Any]]]
WalDirProvider = Callable[[str], Path | None]

# Seconds. A local fdatasync takes 0.1-10 ms; a commit adds a network round trip.
FLUSH_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                 0.25, 0.5, 1.0, 2.5)
COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                  2.5, 5.0, 10.0)
LOOP_LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
FAILOVER_BUCKETS = (1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)

ROLES = ("follower", "pre-candidate", "candidate", "leader")


class AgentMetrics:
    """The registry of one agent and the histograms its parts feed."""

    def __init__(self, node_id: str, timeline: str, status: StatusProvider, *,
                 failovers: FailoversProvider, wal_dir: WalDirProvider,
                 version: str = "") -> None:
        """TIMELINE: the name the histograms are labelled with (one timeline per agent
        today; status-derived series take each timeline's name from the status)."""
        self.registry = CollectorRegistry(auto_describe=False)
        labels = ["timeline"]
        self._wal_flush = Histogram(
            "binkeeper_wal_flush_seconds",
            "Time to write and fdatasync one batch of WAL records (group commit).",
            labels, buckets=FLUSH_BUCKETS, registry=self.registry)
        self._commit = Histogram(
            "binkeeper_commit_seconds",
            "Leader: time from a proposal to its commit by the quorum.",
            labels, buckets=COMMIT_BUCKETS, registry=self.registry)
        self._ack_wait = Histogram(
            "binkeeper_primary_ack_wait_seconds",
            "Leader tailing a primary: time from proposing a transaction to writing its "
            "semi-sync ACK.", labels, buckets=COMMIT_BUCKETS, registry=self.registry)
        self._loop_lag = Histogram(
            "binkeeper_event_loop_lag_seconds",
            "How late the event loop ran a timer due every 50 ms.",
            buckets=LOOP_LAG_BUCKETS, registry=self.registry)
        self.observe_flush: Callable[[float], None] = self._wal_flush.labels(timeline).observe
        self.observe_commit: Callable[[float], None] = self._commit.labels(timeline).observe
        self.observe_ack_wait: Callable[[float], None] = self._ack_wait.labels(timeline).observe
        self.observe_loop_lag: Callable[[float], None] = self._loop_lag.observe
        self.registry.register(_StatusCollector(node_id, version, status, failovers, wal_dir))

    def render(self, accept: str | None) -> tuple[bytes, str]:
        """The exposition for a scrape with ACCEPT (text format, or OpenMetrics when
        asked for): body and content type."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type


class _Families:
    """Metric families built for one scrape, created on first use."""

    def __init__(self) -> None:
        self._families: dict[str, GaugeMetricFamily | CounterMetricFamily] = {}

    def gauge(self, name: str, doc: str, labels: Sequence[str], values: Sequence[str],
              value: float | None) -> None:
        self._add(GaugeMetricFamily, name, doc, labels, values, value)

    def counter(self, name: str, doc: str, labels: Sequence[str], values: Sequence[str],
                value: float | None) -> None:
        self._add(CounterMetricFamily, name, doc, labels, values, value)

    def _add(self, kind: type[GaugeMetricFamily] | type[CounterMetricFamily], name: str,
             doc: str, labels: Sequence[str], values: Sequence[str],
             value: float | None) -> None:
        if value is None:  # not known here (e.g. a member's lag on a follower)
            return
        family = self._families.get(name)
        if family is None:
            family = self._families[name] = kind(name, doc, labels=list(labels))
        family.add_metric(list(values), float(value))

    def __iter__(self) -> Iterator[Metric]:
        return iter(self._families.values())


class _StatusCollector(Collector):
    def __init__(self, node_id: str, version: str, status: StatusProvider,
                 failovers: FailoversProvider, wal_dir: WalDirProvider) -> None:
        self._node_id = node_id
        self._version = version
        self._status = status
        self._failovers = failovers
        self._wal_dir = wal_dir

    def collect(self) -> Iterable[Metric]:
        status = self._status()
        out = _Families()
        out.gauge("binkeeper_agent_info", "This agent: its node id and version (always 1).",
                  ["node_id", "version"], [self._node_id, self._version], 1)
        loop = status.get("event_loop") or {}
        out.gauge("binkeeper_event_loop_max_lag_seconds",
                  "The longest the event loop has been late since start.", [], [],
                  loop.get("max_lag_ms", 0.0) / 1000)
        out.counter("binkeeper_event_loop_stalls_total",
                    "Times the event loop was more than 250 ms late.", [], [],
                    loop.get("stalls", 0))
        counts = CounterMetricFamily("binkeeper_failovers_total", "Failovers and switchovers "
                                     "this agent recorded as leader, by reason.",
                                     labels=["timeline", "reason"])
        durations = HistogramMetricFamily(
            "binkeeper_failover_duration_seconds", "Failovers and switchovers this agent "
            "recorded as leader: time from the primary's last sign of life (a switchover's "
            "start) to the new primary ready.", labels=["timeline", "reason"])
        for timeline in status.get("timelines", []):
            self._timeline(out, timeline)
            self._failover(counts, durations, timeline)
        yield from out
        yield counts
        yield durations

    def _timeline(self, out: _Families, t: Mapping[str, Any]) -> None:
        tl = ["timeline"]
        name = [str(t["name"])]
        out.gauge("binkeeper_commit_lsn", "Commit LSN: byte position in the timeline below "
                  "which the quorum holds everything.", tl, name, t["commit_lsn"])
        out.gauge("binkeeper_flush_lsn", "Flush LSN: byte position up to which this agent's "
                  "WAL is fsynced.", tl, name, t["flush_lsn"])
        out.gauge("binkeeper_last_lsn", "Byte position of the end of this agent's WAL "
                  "(appended, maybe not yet fsynced).", tl, name, t["last_lsn"])
        out.gauge("binkeeper_term", "Consensus term this agent is in.", tl, name, t["term"])
        for role in ROLES:
            out.gauge("binkeeper_role", "This agent's consensus role (1 for the current one).",
                      ["timeline", "role"], [*name, role], 1 if t["role"] == role else 0)
        out.gauge("binkeeper_is_leader", "1 when this agent leads the timeline.", tl, name,
                  1 if t["role"] == "leader" else 0)
        out.counter("binkeeper_elections_total", "Elections this agent stood in (each new "
                    "term it campaigned in).", tl, name, t.get("elections"))
        out.counter("binkeeper_elections_won_total", "Times this agent became leader.", tl,
                    name, t.get("elections_won"))
        out.counter("binkeeper_leader_changes_total", "Times the leader this agent knows of "
                    "changed to another agent (the first leader it learns counts).", tl, name,
                    t.get("leader_changes"))
        # Members: the leader alone knows how far each follower is.
        for member in t.get("members", []):
            labels, values = ["timeline", "member"], [*name, str(member["id"])]
            out.gauge("binkeeper_member_match_lsn", "Leader: the LSN up to which the member's "
                      "WAL is durable and matches the leader's.", labels, values,
                      member.get("match_lsn"))
            out.gauge("binkeeper_member_lag_bytes", "Leader: bytes of the leader's WAL the "
                      "member does not hold durably.", labels, values, member.get("lag_bytes"))
            out.gauge("binkeeper_member_lag_seconds", "Leader: how old the member's position "
                      "is (at most one replication round trip over; 0 when caught up).",
                      labels, values, member.get("lag_s"))
        self._disk(out, t, name)
        self._peers(out, t, name)
        self._source(out, t, name)
        self._replicas(out, t, name)
        self._errors(out, t, name)

    def _disk(self, out: _Families, t: Mapping[str, Any], name: list[str]) -> None:
        tl = ["timeline"]
        out.gauge("binkeeper_wal_size_bytes", "Bytes of WAL segment files on disk.", tl, name,
                  t.get("wal_bytes"))
        out.gauge("binkeeper_wal_disk_full", "1 while WAL writes find no space (appends "
                  "stop on this agent; they resume when space returns).", tl, name,
                  1 if t.get("disk_full") else 0)
        path = self._wal_dir(str(t["timeline_id"]))
        if path is None:
            return
        try:
            fs = os.statvfs(path)
        except OSError:
            return  # (the directory is being removed): no figure rather than a wrong one
        out.gauge("binkeeper_wal_disk_available_bytes", "Bytes free for this agent on the "
                  "file system holding the WAL.", tl, name, fs.f_bavail * fs.f_frsize)
        out.gauge("binkeeper_wal_disk_size_bytes", "Size of the file system holding the WAL.",
                  tl, name, fs.f_blocks * fs.f_frsize)

    def _peers(self, out: _Families, t: Mapping[str, Any], name: list[str]) -> None:
        for peer, link in sorted((t.get("peers") or {}).items()):
            labels, values = ["timeline", "peer"], [*name, str(peer)]
            out.gauge("binkeeper_peer_connected", "1 while this agent's connection to the peer "
                      "is up.", labels, values, 1 if link.get("connected") else 0)
            wire_doc = ("Bytes of peer-protocol frames on the wire, after compression (TLS "
                        "overhead not counted), by direction.")
            for direction, key in (("sent", "bytes_sent_wire"), ("received", "bytes_received")):
                out.counter("binkeeper_peer_bytes_total", wire_doc,
                            ["timeline", "peer", "direction"], [*name, str(peer), direction],
                            link.get(key))
            out.counter("binkeeper_peer_sent_uncompressed_bytes_total", "Bytes of messages "
                        "sent to the peer before compression.", labels, values,
                        link.get("bytes_sent"))
            out.counter("binkeeper_peer_dropped_messages_total", "Messages not queued for the "
                        "peer (queue full, or a vote for a peer away); the core retransmits.",
                        labels, values, link.get("dropped"))

    def _source(self, out: _Families, t: Mapping[str, Any], name: list[str]) -> None:
        source = t.get("source")
        if not source:
            return
        tl = ["timeline"]
        out.gauge("binkeeper_source_connected", "1 while this agent tails the primary as a "
                  "semi-sync replica.", tl, name, 1 if source.get("connected") else 0)
        out.counter("binkeeper_source_transactions_total", "Transactions from the primary "
                    "committed by the quorum.", tl, name, source.get("transactions"))
        out.counter("binkeeper_source_acks_total", "Semi-sync ACKs sent to the primary.", tl,
                    name, source.get("acks"))

    def _replicas(self, out: _Families, t: Mapping[str, Any], name: list[str]) -> None:
        serving = t.get("replication")
        if not serving:
            return
        tl = ["timeline"]
        out.gauge("binkeeper_replica_connections", "Connections to the replication port now.",
                  tl, name, serving.get("connections"))
        out.counter("binkeeper_replica_connections_total", "Connections the replication port "
                    "accepted.", tl, name, serving.get("connections_total"))
        out.counter("binkeeper_replica_sent_bytes_total", "Binlog bytes served to replicas.",
                    tl, name, serving.get("bytes_sent"))
        # Per replica server id; two connections with one id (a replica and a
        # mariadb-binlog sharing it) show the one further behind.
        lags: dict[str, tuple[float, float]] = {}
        for replica in serving.get("replicas", []):
            if replica.get("lag_bytes") is None:
                continue  # not dumping yet
            key = str(replica.get("server_id"))
            old = lags.get(key, (-math.inf, -math.inf))
            lags[key] = (max(old[0], replica["lag_bytes"]), max(old[1], replica["lag_s"]))
        for server_id, (lag_bytes, lag_s) in sorted(lags.items()):
            labels, values = ["timeline", "server_id"], [*name, server_id]
            out.gauge("binkeeper_replica_lag_bytes", "Committed bytes not yet sent to the "
                      "replica.", labels, values, lag_bytes)
            out.gauge("binkeeper_replica_lag_seconds", "How old the replica's position is: "
                      "time since everything then committed was sent to it (0 when caught "
                      "up).", labels, values, lag_s)

    def _errors(self, out: _Families, t: Mapping[str, Any], name: list[str]) -> None:
        peers = (t.get("peers") or {}).values()
        inbound = t.get("peer_connections") or {}
        serving = t.get("replication") or {}
        source = t.get("source") or {}
        kinds = {
            # peer connections closed because the other side broke the protocol
            "peer_protocol": inbound.get("protocol_errors", 0)
            + sum(link.get("protocol_errors", 0) for link in peers),
            # handshakes this agent refused (TLS, certificate, Hello, too many connections)
            "handshake_refused": inbound.get("refused", 0),
            # handshakes peers refused to this agent
            "handshake_refused_by_peer": sum(link.get("refused", 0) for link in peers),
            "disk_full": t.get("disk_full_errors", 0),
            "source_session": source.get("failures", 0),
            "replica_connection": serving.get("errors", 0),
            "replica_refused": serving.get("refused", 0),
            "replica_too_slow": serving.get("dropped_slow", 0),
        }
        for kind, count in kinds.items():
            out.counter("binkeeper_errors_total", "Errors by kind (docs/metrics.md).",
                        ["timeline", "kind"], [name[0], kind], count)

    def _failover(self, counts: CounterMetricFamily, durations: HistogramMetricFamily,
                  t: Mapping[str, Any]) -> None:
        """Failovers and switchovers this agent recorded while leading (the controller runs
        on the leader: another agent's count starts when it leads). Durations are from the
        primary's last sign of life (a switchover: from its start) to the new primary
        ready; one still in progress is counted but has no duration yet."""
        name = str(t["name"])
        by_reason: dict[str, list[float]] = {"failover": [], "switchover": []}
        counted = {"failover": 0, "switchover": 0}
        for record in self._failovers(str(t["timeline_id"])):
            reason = str(record.get("reason") or "failover")
            counted[reason] = counted.get(reason, 0) + 1
            by_reason.setdefault(reason, [])
            if record.get("ready_s") is not None:
                by_reason[reason].append(float(record.get("silent_s") or 0.0)
                                         + float(record["ready_s"]))
        for reason, count in sorted(counted.items()):
            counts.add_metric([name, reason], count)
        for reason, values in sorted(by_reason.items()):
            buckets = [(_le(bound), sum(1 for v in values if v <= bound))
                       for bound in FAILOVER_BUCKETS]
            buckets.append(("+Inf", len(values)))
            durations.add_metric([name, reason], buckets, sum(values))


def _le(bound: float) -> str:
    return str(float(bound))
