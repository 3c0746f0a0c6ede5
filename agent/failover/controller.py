"""The failover controller: on the leader, decides which server is the primary and records
each decision in the log (docs/failover.md).

Built so far: adoption. When a leader finds no committed GROUP record, it probes the
servers it knows (its own `[mariadb]`, and each peer's from its Hello), chooses the primary
(agent/failover/group.py) and records it; until it can, status and the log say why, and it
tries again. Detection, failover, switchover and fencing build on the same loop (#13).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import trio

from agent.config import Address, Config
from agent.failover.group import ServerState, choose_adopted, config_problems, duplicate_server_ids
from agent.failover.probe import probe
from agent.node.group_record import GroupRecord, PrimaryServer
from agent.node.handle import CommitOutcomeUnknown, NotLeader, TimelineHandle

log = logging.getLogger("binkeeper.failover")

INTERVAL = 0.5  # seconds between the leader's looks at the group


class FailoverController:
    def __init__(self, config: Config, timeline: TimelineHandle,
                 peer_servers: Callable[[], dict[str, Address]]) -> None:
        self.config = config
        self.timeline = timeline
        self._peer_servers = peer_servers
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
            await trio.sleep(INTERVAL)
            if self.timeline.role != "leader" or not self.config.mariadb.enabled:
                continue
            states = await self.probe_all()
            if self.timeline.group_record() is None:
                await self._adopt(states)

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
            term=self.timeline.term)
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

    def _wait(self, reason: str) -> None:
        if reason != self.waiting:  # once per reason, not every half second
            log.warning("%s; retrying", reason)
        self.waiting = reason

    def status(self) -> dict[str, Any]:
        record = self.timeline.group_record()
        primary = record.primary if record is not None else None
        return {
            "primary": record.as_status() if record is not None else None,
            "servers": [_server_status(state, primary) for state in self.servers],
            "failover": {"epoch": record.epoch if record is not None else 0,
                         "waiting": self.waiting, "problems": self.problems},
        }


def _server_status(state: ServerState, primary: PrimaryServer | None) -> dict[str, Any]:
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
            "error": state.error}
