"""One agent: starts and wires every part — the timeline's node loop and peer transport,
the MariaDB source, the replication port and the admin API — in one trio nursery.

`binkeeper run` (agent/cli/run.py) runs one `Agent` until a signal; the demo and the
harness run agents in-process. Later: many timelines per agent (agent/timelines/), the
failover controller (agent/failover/), S3 offload (agent/offload/), each started here.
"""

from __future__ import annotations

import importlib.metadata
import logging
import resource
import signal
import sys
from functools import partial
from pathlib import Path
from typing import Any

import trio
from starlette.routing import Route

import consensus
import walstore
from agent.config import Config, derived_server_id
from agent.failover.api import switchover_routes
from agent.failover.controller import FailoverController
from agent.failover.keeper import ServerKeeper
from agent.layout import timeline_dir
from agent.node.handle import TimelineHandle
from agent.node.loop import TimelineNode
from agent.node.transport import PeerTransport
from agent.ops.admin import admin_routes
from agent.ops.auth import TokenAuth
from agent.ops.http_api import make_app, serve_http
from agent.ops.loop_health import LoopHealth
from agent.ops.metrics import AgentMetrics
from agent.serving.server import ReplicationServer
from agent.source.source import MariaDBSource

log = logging.getLogger("binkeeper.agent")

PREFERRED_LEADER_CHECK = 1.0  # seconds between checks that the preferred leader caught up


def initial_membership(config: Config) -> consensus.Membership:
    """The membership a brand-new data directory starts from: the configured peers.

    A joining agent (`join = true`) starts as a learner of the configured voters; it
    never campaigns until a committed change promotes it.
    """
    addresses = {p.id: str(p.addr) for p in config.peers}
    addresses[config.node_id] = str(config.listen_peer)
    peers = frozenset(p.id for p in config.peers)
    voters = peers if config.join else frozenset(config.member_ids)
    learners = frozenset({config.node_id}) if config.join else frozenset()
    return consensus.Membership(1, voters, learners, tuple(sorted(addresses.items())))


class Agent:
    """Everything one agent runs. Subclasses (the test harness) may add tasks, routes and
    status through `extra_tasks`, `extra_routes` and `extra_timeline_status`."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.timeline_dir = timeline_dir(config.data_dir, config.timeline_id)
        self.store: walstore.WalStore | None = None
        self.node: TimelineNode | None = None
        self.timeline: TimelineHandle | None = None
        self.transport: PeerTransport | None = None
        self.source: MariaDBSource | None = None
        self.replication: ReplicationServer | None = None
        self.failover: FailoverController | None = None
        self.keeper: ServerKeeper | None = None
        self.metrics = AgentMetrics(config.node_id, config.mariadb.timeline, self.status,
                                    failovers=self._failovers, wal_dir=self._wal_dir,
                                    version=_version())
        self.loop_health = LoopHealth(observe=self.metrics.observe_loop_lag)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        config = self.config
        self.timeline_dir.mkdir(parents=True, exist_ok=True)
        self.store = walstore.WalStore.open(self.timeline_dir)
        try:
            cons = config.consensus
            self.transport = PeerTransport(config, self._deliver, self._inbox_room)
            self.node = TimelineNode(
                node_id=config.node_id,
                initial_membership=initial_membership(config),
                on_membership=self._membership_changed,
                store=self.store,
                send=self.transport.send,
                tick_seconds=cons.tick_ms / 1000,
                core_config=consensus.Config(
                    node_id=config.node_id,
                    election_ticks=cons.election_ticks,
                    heartbeat_ticks=cons.heartbeat_ticks,
                    max_batch_bytes=cons.max_batch_bytes,
                    max_inflight_bytes=cons.max_inflight_bytes,
                ),
            )
            self.node.observe_flush = self.metrics.observe_flush
            self.node.observe_commit = self.metrics.observe_commit
            self.timeline = TimelineHandle(self.node, config.timeline_id, config.mariadb.timeline,
                                           self._timeline_status,
                                           remote_members=config.tls is not None)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.loop_health.run)
                await nursery.start(self.node.run)
                await nursery.start(self.transport.run)
                if config.listen_http is not None:
                    routes = (admin_routes(self._lookup) + switchover_routes(self._controller)
                              + self.extra_routes())
                    app = make_app(self.status, routes, TokenAuth(config.admin.jwt_secret),
                                   metrics=self.metrics.render)
                    await nursery.start(
                        partial(serve_http, app, config.listen_http, tls=config.tls))
                if config.preferred_leader and config.preferred_leader != config.node_id:
                    nursery.start_soon(self._prefer_leader, config.preferred_leader)
                if config.listen_mysql is not None:
                    self.replication = ReplicationServer(
                        config.listen_mysql, config.replication, self.node, self.store,
                        config.replication.server_id or derived_server_id(config.node_id),
                        config.mariadb.timeline, tls=config.tls)
                    await nursery.start(self.replication.run)
                if config.mariadb.enabled:
                    transport = self.transport
                    self.failover = FailoverController(
                        config, self.timeline, lambda: dict(transport.peer_servers),
                        lambda: self.source.status.last_read if self.source else 0.0)
                    nursery.start_soon(self.failover.run)
                    self.keeper = ServerKeeper(config, self.timeline)
                    nursery.start_soon(self.keeper.run)
                    self.source = MariaDBSource(config.mariadb, config.node_id, self.node,
                                                self.store, self._recorded_primary)
                    self.source.observe_ack_wait = self.metrics.observe_ack_wait
                    nursery.start_soon(self.source.run)
                self.extra_tasks(nursery)
                log.info(
                    "agent %s up: peers on %s, http on %s, timeline %s",
                    config.node_id,
                    config.listen_peer,
                    config.listen_http,
                    config.timeline_id,
                )
                task_status.started()
        finally:
            if self.node is not None:
                self.node.persist_commit_now()
            self.store.close()

    # ---- for subclasses ----------------------------------------------------------------------

    def extra_tasks(self, nursery: trio.Nursery) -> None:
        """Start more tasks once the agent is up."""

    def extra_routes(self) -> list[Route]:
        return []

    def extra_timeline_status(self) -> dict[str, Any]:
        return {}

    # ---- internals ------------------------------------------------------------------------

    def _controller(self, name: str) -> FailoverController | None:
        return self.failover if self._lookup(name) is not None else None

    def _lookup(self, name: str) -> TimelineHandle | None:
        timeline = self.timeline
        return timeline if timeline is not None and timeline.known_as(name) else None

    async def _prefer_leader(self, preferred: str) -> None:
        """While leading, hand leadership to the agent beside the primary once it caught up."""
        node = self.node
        assert node is not None
        while True:
            await trio.sleep(PREFERRED_LEADER_CHECK)
            if node.caught_up(preferred):
                log.info("handing leadership to %s, the agent beside the primary", preferred)
                try:
                    await node.transfer_leadership(preferred)
                except (consensus.NotLeader, ValueError):
                    pass

    def _membership_changed(self, membership: consensus.Membership) -> None:
        if self.transport is not None:
            self.transport.update_members(membership.members, dict(membership.addresses))

    def _recorded_primary(self) -> tuple[str, int] | None:
        """Where the recorded primary is: the server the leader tails (docs/failover.md)."""
        if self.timeline is None or not self.timeline.record_is_current():
            return None  # a new leader's newest record may be superseded: wait until current
        record = self.timeline.group_record()
        # Only a ready one: a server still being promoted or caught up may hold a different
        # transaction under a GTID the log has, and the source trusts GTIDs it has stored.
        if record is None or not record.ready:
            return None
        # (During a switchover too: the old primary's waiting commits get their ACKs.)
        return (record.primary.host, record.primary.port)

    def _deliver(self, msg: Any) -> None:
        assert self.node is not None
        self.node.deliver(msg)

    async def _inbox_room(self) -> None:
        assert self.node is not None
        await self.node.wait_inbox_room()

    def _timeline_status(self) -> dict[str, Any]:
        return {
            "source": self.source.status.as_dict() if self.source else None,
            "keeper": self.keeper.status.as_dict() if self.keeper else None,
            **(self.failover.status() if self.failover else {"primary": None, "servers": []}),
            "replication": self.replication.status_dict() if self.replication else None,
            "peers": self.transport.status() if self.transport else {},
            "peer_connections": self.transport.inbound_counts() if self.transport else {},
            **self.extra_timeline_status(),
        }

    def status(self) -> dict[str, Any]:
        timelines = [self.timeline.status()] if self.timeline is not None else []
        return {"node_id": self.config.node_id, "event_loop": self.loop_health.as_dict(),
                "timelines": timelines}

    # For the metrics (agent/ops/metrics.py), by timeline id:
    def _failovers(self, timeline_id: str) -> list[dict[str, Any]]:
        # The controller's own list (every failover it recorded while this agent led).
        failover = self.failover
        return list(failover.failovers) if failover is not None else []

    def _wal_dir(self, timeline_id: str) -> Path | None:
        return self.timeline_dir if timeline_id == self.config.timeline_id else None


def _version() -> str:
    try:
        return importlib.metadata.version("binkeeper")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree
        return ""


def setup_logging() -> None:
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


async def run_until_signal(agent: Agent) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(agent.run)
            async for signum in signals:
                log.info("%s: stopping", signal.Signals(signum).name)
                nursery.cancel_scope.cancel()
                break


def _leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups: trio's nurseries wrap them."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _raise_descriptor_limit() -> None:
    """Open files up to the hard limit: replicas, peers and segments each hold descriptors,
    and running out must not be what stops an agent (connections are capped well below)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-files limit from %d to %d: %s", soft, hard, exc)


def run_agent(agent: Agent, command: str = "binkeeper run") -> int:
    """Run AGENT until a signal; the exit code (1 when it could not run or had to stop)."""
    _raise_descriptor_limit()
    try:
        trio.run(run_until_signal, agent)
    except Exception as exc:
        leaves = _leaves(exc)
        for kind, prefix in ((walstore.FsyncFailed, ""),
                             (walstore.WalError, "cannot open the WAL: "), (OSError, "")):
            found = next((leaf for leaf in leaves if isinstance(leaf, kind)), None)
            if found is not None:
                print(f"{command}: {prefix}{found}", file=sys.stderr)
                return 1
        raise
    return 0
