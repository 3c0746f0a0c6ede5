"""The failover controller: on the leader, decides which server is the primary and records
each decision in the log (docs/failover.md).

Every half second the leader probes the servers it knows (its own `[mariadb]`, and each
peer's from its Hello). With no committed GROUP record it adopts a primary
(agent/failover/group.py). With one, it watches the recorded primary: when both its binlog
stream (the source: no event or heartbeat read) and the SQL probe have been silent for
`[failover].primary_timeout_ms`, the primary is lost, and the most advanced live replica is
recorded as the new one (reason "failover"); the keeper beside it promotes it once it has
applied everything committed, and the source tails it. Until a decision can be made,
status and the log say why, and it tries again.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any

import trio

from agent.config import Address, Config
from agent.failover.group import (
    ServerState,
    choose_adopted,
    choose_candidate,
    config_problems,
    duplicate_server_ids,
    lag,
)
from agent.failover.probe import probe
from agent.node.group_record import GroupRecord, PrimaryServer
from agent.node.handle import CommitOutcomeUnknown, NotLeader, TimelineHandle

log = logging.getLogger("binkeeper.failover")

INTERVAL = 0.5  # seconds between the leader's looks at the group


class FailoverController:
    def __init__(self, config: Config, timeline: TimelineHandle,
                 peer_servers: Callable[[], dict[str, Address]],
                 stream_read_at: Callable[[], float] = lambda: 0.0) -> None:
        """STREAM_READ_AT: time.monotonic() of the source's newest read from the primary."""
        self.config = config
        self.timeline = timeline
        self._peer_servers = peer_servers
        self._stream_read_at = stream_read_at
        self._probe_ok_at = time.monotonic()  # the recorded primary last answered a probe
        self._watching: tuple[str, int] | None = None
        self._lost_at = 0.0
        self.failovers: list[dict[str, Any]] = []  # what each failover did, with timings
        self.servers: list[ServerState] = []  # the newest probe of each known server
        self.problems: list[str] = []  # what is misconfigured, each naming the option
        self.waiting: str | None = None  # why no decision could be made, while it lasts
        self._probes = trio.CapacityLimiter(8)

    def known_servers(self) -> dict[str, Address]:
        servers = dict(self._peer_servers())
        mariadb = self.config.mariadb
        if mariadb.enabled:
            servers[self.config.node_id] = Address(mariadb.host, mariadb.port)
        return servers

    async def run(self) -> None:
        while True:
            record = self.timeline.group_record()
            # Quicker while a chosen primary is being promoted: clients wait for "ready".
            await trio.sleep(INTERVAL if record is None or record.ready else INTERVAL / 5)
            if self.timeline.role != "leader" or not self.config.mariadb.enabled:
                continue
            states = await self.probe_all()
            record = self.timeline.group_record()
            if record is None:
                await self._adopt(states)
                continue
            if not record.ready:
                await self._mark_ready(record, states)
            else:
                await self._check_restarted(record, states)
            if self.config.failover.enabled:
                await self._watch(record, states)

    async def probe_all(self) -> list[ServerState]:
        mariadb = self.config.mariadb
        states: dict[str, ServerState] = {}

        async def one(node: str, address: Address) -> None:
            states[node] = await trio.to_thread.run_sync(
                probe, node, address.host, address.port, mariadb.user, mariadb.password,
                limiter=self._probes)

        async with trio.open_nursery() as nursery:
            for node, address in sorted(self.known_servers().items()):
                nursery.start_soon(one, node, address)
        self.servers = [states[node] for node in sorted(states)]
        problems = [p for state in self.servers if state.reachable
                    for p in config_problems(state)]
        self.problems = sorted(set(problems)) + duplicate_server_ids(self.servers)
        return self.servers

    async def _adopt(self, states: list[ServerState]) -> None:
        choice = choose_adopted(states, self.config.preferred_leader)
        if choice.server is None:
            self._wait(f"no primary adopted: {choice.reason}")
            return
        chosen = choice.server
        record = GroupRecord(
            epoch=1,
            primary=PrimaryServer(chosen.node, chosen.host, chosen.port, chosen.server_id),
            reason="adopted", committed_gtid=self.timeline.committed_gtid(),
            term=self.timeline.term, ready=not chosen.read_only)
        try:
            await self.timeline.record_group(record)
        except (NotLeader, CommitOutcomeUnknown) as exc:
            self._wait(f"the adoption of {chosen.address} did not commit: {exc}")
            return
        self.waiting = None
        log.info("adopted %s's server %s as the primary (%s); recorded in term %d",
                 chosen.node, chosen.address, choice.reason, record.term)
        for problem in self.problems:
            log.warning("misconfigured: %s", problem)

    async def _watch(self, record: GroupRecord, states: list[ServerState]) -> None:
        address = (record.primary.host, record.primary.port)
        now = time.monotonic()
        if address != self._watching:  # a new primary (or a new leader): a fresh start
            self._watching, self._probe_ok_at = address, now
        primary = next((s for s in states if (s.host, s.port) == address), None)
        if primary is not None and primary.reachable:
            self._probe_ok_at = now
        heard = max(self._probe_ok_at, self._stream_read_at())
        silent = now - heard
        if silent * 1000 < self.config.failover.primary_timeout_ms:
            if self.waiting is not None and self.waiting.startswith("primary lost"):
                self.waiting = None
            return
        choice = choose_candidate(states, address, self.config.preferred_leader)
        if choice.server is None:
            self._wait(f"primary lost ({record.primary.host}:{record.primary.port} silent "
                       f"beyond {self.config.failover.primary_timeout_ms} ms), no failover: "
                       f"{choice.reason}")
            return
        chosen = choice.server
        new = GroupRecord(
            epoch=record.epoch + 1,
            primary=PrimaryServer(chosen.node, chosen.host, chosen.port, chosen.server_id),
            reason="failover", committed_gtid=self.timeline.committed_gtid(),
            term=self.timeline.term, ready=False)
        log.warning("primary %s:%d silent for %.1fs (stream and SQL): failing over to %s's "
                    "server %s (%s)", *address, silent, chosen.node, chosen.address,
                    choice.reason)
        started = self._lost_at = time.monotonic()
        try:
            await self.timeline.record_group(new)
        except (NotLeader, CommitOutcomeUnknown) as exc:
            self._wait(f"primary lost, but the failover to {chosen.address} did not commit: "
                       f"{exc}")
            return
        self.waiting = None
        self.failovers.append({"epoch": new.epoch, "from": f"{address[0]}:{address[1]}",
                               "to": chosen.address, "silent_s": round(silent, 3),
                               "record_s": round(time.monotonic() - started, 3),
                               "committed_gtid": new.committed_gtid})
        log.info("recorded %s's server %s as the primary (epoch %d); its keeper promotes it "
                 "once it has applied %s", chosen.node, chosen.address, new.epoch,
                 new.committed_gtid or "nothing")

    async def _mark_ready(self, record: GroupRecord, states: list[ServerState]) -> None:
        """The keeper beside the chosen server promotes it; once it is writable, a second
        record of the same epoch tells every agent (and `binkeeper primary`) it is ready."""
        address = (record.primary.host, record.primary.port)
        chosen = next((s for s in states if (s.host, s.port) == address), None)
        if chosen is None or not chosen.reachable or chosen.read_only:
            return
        ready = dataclasses.replace(record, ready=True, term=self.timeline.term)
        try:
            await self.timeline.record_group(ready)
        except (NotLeader, CommitOutcomeUnknown):
            return  # the next leader sees the server writable and records it
        log.info("%s's server %s is the primary, ready (epoch %d)", record.primary.node,
                 chosen.address, record.epoch)
        if self.failovers and self.failovers[-1]["epoch"] == record.epoch:
            self.failovers[-1]["ready_s"] = round(time.monotonic() - self._lost_at, 3)

    async def _check_restarted(self, record: GroupRecord, states: list[ServerState]) -> None:
        """A ready primary found read-only restarted (fenced, its unacknowledged tail cut):
        it is not ready until its keeper has caught it up with everything committed and
        made it writable again — recorded, so clients and the source leave it meanwhile."""
        address = (record.primary.host, record.primary.port)
        state = next((s for s in states if (s.host, s.port) == address), None)
        if state is None or not state.reachable or not state.read_only:
            return
        again = dataclasses.replace(record, epoch=record.epoch + 1, reason="restarted",
                                    committed_gtid=self.timeline.committed_gtid(),
                                    term=self.timeline.term, ready=False)
        try:
            await self.timeline.record_group(again)
        except (NotLeader, CommitOutcomeUnknown):
            return
        log.warning("the primary %s restarted read-only: not ready until it has caught up "
                    "with the committed history (epoch %d)", state.address, again.epoch)

    def _wait(self, reason: str) -> None:
        if reason != self.waiting:  # once per reason, not every half second
            log.warning("%s; retrying", reason)
        self.waiting = reason

    def status(self) -> dict[str, Any]:
        record = self.timeline.group_record()
        primary = record.primary if record is not None else None
        committed = self.timeline.committed_gtid() if self.servers else ""
        return {
            "primary": record.as_status() if record is not None and record.ready else None,
            "promoting": record.as_status() if record is not None and not record.ready
            else None,
            "servers": [_server_status(state, primary, committed) for state in self.servers],
            "failover": {"epoch": record.epoch if record is not None else 0,
                         "reason": record.reason if record is not None else None,
                         "waiting": self.waiting, "problems": self.problems,
                         "failovers": self.failovers[-10:]},
        }


def _server_status(state: ServerState, primary: PrimaryServer | None,
                   committed: str) -> dict[str, Any]:
    if not state.reachable:
        role = "down"
    elif primary is not None and (state.host, state.port) == (primary.host, primary.port):
        role = "primary"
    elif not state.read_only:
        # writable but not the recorded primary: to be brought back as a replica
        role = "recovering" if primary is not None else "primary"
    else:
        role = "replica"
    return {"node": state.node, "role": role, "address": state.address,
            "server_id": state.server_id,
            "applied_gtid": state.gtid_binlog_pos or state.gtid_slave_pos or None,
            # transactions committed by the quorum not yet applied (as of the last probe)
            "lag": lag(state, committed), "error": state.error}
