"""`binkeeper run --config FILE`: one agent, until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from typing import Any

import trio
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import consensus
import walstore
from agent.admin import admin_routes
from agent.config import Config, ConfigError, load_config
from agent.http_api import make_app, serve_http
from agent.loop_health import LoopHealth
from agent.mysql_server.server import ReplicationServer
from agent.peers import PeerTransport
from agent.source import MariaDBSource
from agent.synthetic import LoadSpec, LoadStats, run_load
from agent.tailer import derived_server_id
from agent.timeline import TimelineNode

log = logging.getLogger("binkeeper.agent")


def initial_membership(config: Config) -> walstore.Membership:
    """The membership a brand-new data directory starts from: the configured peers.

    A joining agent (`join = true`) starts as a learner of the configured voters; it
    never campaigns until a committed change promotes it.
    """
    addresses = {p.id: str(p.addr) for p in config.peers}
    addresses[config.node_id] = str(config.listen_peer)
    peers = tuple(sorted(p.id for p in config.peers))
    voters: tuple[str, ...] = peers if config.join else config.member_ids
    learners: tuple[str, ...] = (config.node_id,) if config.join else ()
    return walstore.Membership(1, voters, learners, tuple(sorted(addresses.items())))


class Agent:
    """Everything one agent runs: the timeline node, its peer transport, the admin API."""

    def __init__(self, config: Config, synthetic: LoadSpec | None = None) -> None:
        self.config = config
        self.synthetic = synthetic
        self.synthetic_stats = LoadStats()
        self._synthetic_scope = trio.CancelScope()
        self.timeline_dir = config.data_dir / "timelines" / config.timeline_id
        self.store: walstore.WalStore | None = None
        self.node: TimelineNode | None = None
        self.transport: PeerTransport | None = None
        self.source: MariaDBSource | None = None
        self.replication: ReplicationServer | None = None
        self.loop_health = LoopHealth()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        config = self.config
        self.timeline_dir.mkdir(parents=True, exist_ok=True)
        self.store = walstore.WalStore.open(self.timeline_dir)
        try:
            cons = config.consensus
            self.transport = PeerTransport(config, self._deliver)
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
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.loop_health.run)
                await nursery.start(self.node.run)
                await nursery.start(self.transport.run)
                if config.listen_http is not None:
                    app = make_app(self.status, admin_routes(self) + self._debug_routes())
                    await nursery.start(serve_http, app, config.listen_http)
                if self.synthetic is not None:
                    nursery.start_soon(self._run_synthetic, self.synthetic)
                if config.preferred_leader and config.preferred_leader != config.node_id:
                    nursery.start_soon(self._prefer_leader, config.preferred_leader)
                if config.listen_mysql is not None:
                    self.replication = ReplicationServer(
                        config.listen_mysql, config.replication, self.node, self.store,
                        config.replication.server_id or derived_server_id(config.node_id),
                        config.mariadb.timeline)
                    await nursery.start(self.replication.run)
                if config.mariadb.enabled:
                    self.source = MariaDBSource(config.mariadb, config.node_id, self.node,
                                                self.store)
                    nursery.start_soon(self.source.run)
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

    async def _run_synthetic(self, spec: LoadSpec) -> None:
        assert self.node is not None
        with self._synthetic_scope:
            await run_load(self.node, spec, self.synthetic_stats)

    def _debug_routes(self) -> list[Route]:
        if self.synthetic is None:
            return []

        async def stop_synthetic(_request: Request) -> JSONResponse:
            self._synthetic_scope.cancel()
            return JSONResponse({"stopped": True})

        return [Route("/v1/synthetic/stop", stop_synthetic, methods=["POST"])]

    async def _prefer_leader(self, preferred: str) -> None:
        """While leading, hand leadership to the agent beside the primary once it caught up."""
        node = self.node
        assert node is not None
        while True:
            await trio.sleep(1.0)
            core = node.core
            progress = core.progress.get(preferred)
            if (
                node.role == "leader"
                and preferred in core.membership.voters
                and progress is not None
                and progress.state is consensus.ProgressState.REPLICATE
                and core.log.last_lsn() - progress.match_lsn <= core.config.max_batch_bytes
            ):
                log.info("handing leadership to %s, the agent beside the primary", preferred)
                try:
                    await node.transfer_leadership(preferred)
                except (consensus.NotLeader, ValueError):
                    pass

    def _membership_changed(self, membership: consensus.Membership) -> None:
        if self.transport is not None:
            self.transport.update_members(membership.members, dict(membership.addresses))

    def _deliver(self, msg: Any) -> None:
        assert self.node is not None
        self.node.deliver(msg)

    def status(self) -> dict[str, Any]:
        node, store = self.node, self.store
        timelines = []
        if node is not None and store is not None:
            core = node.core.status()
            membership = node.core.membership
            members = []
            for member_id in sorted(core.voters | core.learners):
                progress = core.progress.get(member_id)
                # Another member's flush LSN is known on the leader only: what it acked as
                # durable (and matching the leader's log).
                flush = (
                    store.flush_lsn if member_id == self.config.node_id
                    else progress.match_lsn if progress is not None else None
                )
                members.append(
                    {
                        "id": member_id,
                        "role": "voter" if member_id in core.voters else "learner",
                        "flush_lsn": flush,
                        "match_lsn": progress.match_lsn if progress is not None else None,
                        "next_lsn": progress.next_lsn if progress is not None else None,
                    }
                )
            timelines.append(
                {
                    "timeline_id": self.config.timeline_id,
                    "name": self.config.mariadb.timeline,
                    "role": node.role,
                    "term": core.term,
                    "leader": core.leader,
                    "commit_lsn": core.commit_lsn,
                    "flush_lsn": store.flush_lsn,
                    "last_lsn": store.end_lsn,
                    "fsyncs": store.fsync_count,
                    "fsync_mean_ms": round(
                        store.fsync_seconds * 1000 / max(1, store.fsync_count), 3),
                    "inline_flushes": node.inline_flushes,
                    "committed_gtid": ",".join(
                        sorted(store.gtids_at(core.commit_lsn).values())) or None,
                    "members": members,
                    "membership_generation": membership.generation,
                    "primary": self.source.status.as_dict() if self.source else None,
                    "replication": (self.replication.status.as_dict()
                                    if self.replication else None),
                    "peers": self.transport.status() if self.transport else {},
                    "synthetic": self.synthetic_stats.summary() if self.synthetic else None,
                }
            )
        return {"node_id": self.config.node_id, "event_loop": self.loop_health.as_dict(),
                "timelines": timelines}


async def _run_until_signal(agent: Agent) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(agent.run)
            async for signum in signals:
                log.info("%s: stopping", signal.Signals(signum).name)
                nursery.cancel_scope.cancel()
                break


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        config = load_config(args.config)
        synthetic = LoadSpec.parse(args.synthetic_load) if args.synthetic_load else None
    except (ConfigError, ValueError) as exc:
        print(f"binkeeper run: {exc}", file=sys.stderr)
        return 2
    try:
        trio.run(_run_until_signal, Agent(config, synthetic))
    except walstore.WalError as exc:
        print(f"binkeeper run: cannot open the WAL: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"binkeeper run: {exc}", file=sys.stderr)
        return 1
    return 0
