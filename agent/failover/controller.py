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

import walstore
from agent.config import Address, Config, check_node_id
from agent.failover.group import (
    ServerState,
    choose_adopted,
    choose_candidate,
    config_problems,
    duplicate_server_ids,
    errant_gtids,
    lag,
)
from agent.failover.probe import probe
from agent.node.group_record import GroupRecord, PrimaryServer
from agent.node.handle import ChangeRefused, CommitOutcomeUnknown, NotLeader, TimelineHandle

log = logging.getLogger("binkeeper.failover")

INTERVAL = 0.5  # seconds between the leader's looks at the group
HANDOVER_TIMEOUT = 10.0  # seconds for a switchover's old primary to be read-only and drained
READY_TIMEOUT = 30.0  # seconds for a switchover's new primary to be writable
PROMOTE_STALL = 10.0  # seconds a server being promoted may show no progress (at least)


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
        self._primary_answered = True  # the recorded primary answered the last probe
        # (epoch, (binlog position, read_only), since): the server being promoted, as last
        # seen changing
        self._promoting: tuple[int, tuple[str, bool] | None, float] | None = None
        self.failovers: list[dict[str, Any]] = []  # what each failover did, with timings
        self.servers: list[ServerState] = []  # the newest probe of each known server
        self.problems: list[str] = []  # what is misconfigured, each naming the option
        self.waiting: str | None = None  # why no decision could be made, while it lasts
        self.errant: dict[str, str] = {}  # node -> GTIDs its server holds the log never had
        self._probes = trio.CapacityLimiter(8)
        self._switching = False  # this leader is running a switchover (switchover())
        self._handing_over = False  # ... and has not recorded its new primary yet

    def known_servers(self) -> dict[str, Address]:
        servers = dict(self._peer_servers())
        mariadb = self.config.mariadb
        if mariadb.enabled:
            servers[self.config.node_id] = Address(mariadb.host, mariadb.port)
        return servers

    async def run(self) -> None:
        while True:
            record = self.timeline.group_record()
            # Quicker while a chosen primary is being promoted (clients wait for "ready"), and
            # while the primary does not answer: the timeout, not the poll, decides when.
            quiet = record is None or (record.ready and self._primary_answered)
            await trio.sleep(INTERVAL if quiet else INTERVAL / 5)
            if self.timeline.role != "leader" or not self.config.mariadb.enabled:
                self._watching = None  # leading again later: the silence counts afresh
                continue
            if not self.timeline.record_is_current():
                # A new leader's commit LSN lags until its term's first entry commits: the
                # newest record here may be superseded, and deciding on it could undo a
                # decision the group already took.
                continue
            states = await self.probe_all()
            record = self.timeline.group_record()
            if record is None:
                await self._adopt(states)
                continue
            if self._handing_over:  # switchover() decides until its new primary is recorded
                continue
            if record.handover_to is not None:
                # Not this leader's switchover (it is done, or its leader is gone): the old
                # primary stays.
                await self._abort_handover(record, "the leader that began it is gone")
                continue
            if not record.ready:
                if await self._abandon_promotion(record, states):
                    continue
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
        record = self.timeline.group_record()
        recorded = (record.primary.host, record.primary.port) if record is not None else None

        def in_flight(state: ServerState) -> bool:
            # The recorded primary, once ready or writable (promoted: semi-sync on before
            # read_only=OFF), runs ahead of the log by the commits waiting for their ACK.
            # Read-only and being promoted, it has only what its agent served it, plus
            # anything written around the agents.
            return (record is not None and (state.host, state.port) == recorded
                    and (record.ready or not state.read_only))

        # During the adoption the log holds none of the group's history yet (the source
        # reads the adopted primary's binlog once it is ready): nothing can be judged.
        adopting = record is None or (record.reason == "adopted" and not record.ready)
        self.errant = {} if adopting else {
                       s.node: errant for s in self.servers
                       if s.reachable and not in_flight(s)
                       and (errant := errant_gtids(s.gtid_binlog_pos, self.timeline.log_holds))}
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
            # A writable server was the primary before the agents came: it stays one (its
            # keeper, if it has one, sets semi-sync that never falls back at once; the
            # source names unsafe settings until then).
            term=self.timeline.term, ready=not chosen.read_only)
        if not await self._record(record, f"the adoption of {chosen.address}"):
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
        primary = _state_at(states, record.primary)
        self._primary_answered = primary is not None and primary.reachable
        if self._primary_answered:
            self._probe_ok_at = now
        heard = max(self._probe_ok_at, self._stream_read_at())
        silent = now - heard
        if silent * 1000 < self.config.failover.primary_timeout_ms:
            if self.waiting is not None and self.waiting.startswith("primary lost"):
                self.waiting = None
            return
        # (the reason in status and the log names no duration: it is said once, not again
        # every 0.1 s while it lasts)
        await self._fail_over(record, states, f"{address[0]}:{address[1]} silent (stream and "
                              "SQL)", silent)

    def _candidates(self, states: list[ServerState]) -> list[ServerState]:
        return [s for s in states if s.node not in self.errant]

    async def _fail_over(self, record: GroupRecord, states: list[ServerState], why: str,
                         silent: float = 0.0) -> None:
        """Record the most advanced live replica (none holding errant GTIDs) as the primary
        instead of RECORD's, or say why not."""
        address = (record.primary.host, record.primary.port)
        choice = choose_candidate(self._candidates(states), address,
                                  self.config.preferred_leader)
        if choice.server is None:
            self._wait(f"primary lost ({why}; timeout "
                       f"{self.config.failover.primary_timeout_ms} ms), no failover: "
                       f"{choice.reason}")
            return
        chosen = choice.server
        new = GroupRecord(
            epoch=record.epoch + 1,
            primary=PrimaryServer(chosen.node, chosen.host, chosen.port, chosen.server_id),
            reason="failover", committed_gtid=self.timeline.committed_gtid(),
            term=self.timeline.term, ready=False)
        log.warning("primary lost (%s): failing over to %s's server %s (%s)", why,
                    chosen.node, chosen.address, choice.reason)
        started = self._lost_at = time.monotonic()
        if not await self._record(new, f"primary lost, but the failover to {chosen.address}"):
            return
        self.waiting = None
        self.failovers.append({"epoch": new.epoch, "from": f"{address[0]}:{address[1]}",
                               "to": chosen.address, "silent_s": round(silent, 3),
                               "record_s": round(time.monotonic() - started, 3),
                               "committed_gtid": new.committed_gtid})
        log.info("recorded %s's server %s as the primary (epoch %d); its keeper promotes it "
                 "once it has applied %s", chosen.node, chosen.address, new.epoch,
                 new.committed_gtid or "nothing")

    async def _abandon_promotion(self, record: GroupRecord, states: list[ServerState]) -> bool:
        """Choose another server when the one being promoted cannot become the primary: it
        holds a transaction the log never had (a privileged write to it after a restart,
        say: its keeper refuses it), or it makes no progress for PROMOTE_STALL — its agent
        down, its keeper refusing it, its replication stopped (a replica catching up is
        progress) — rather than leave the group without a primary."""
        state = _state_at(states, record.primary)
        position = (state.gtid_binlog_pos, state.read_only) if state is not None else None
        now = time.monotonic()
        if self._promoting is None or self._promoting[:2] != (record.epoch, position):
            self._promoting = (record.epoch, position, now)
        limit = max(PROMOTE_STALL, 2 * self.config.failover.primary_timeout_ms / 1000)
        errant = self.errant.get(record.primary.node)
        why = (f"holds {errant}, which the quorum never committed" if errant
               else f"made no progress for {limit:.0f}s" if now - self._promoting[2] >= limit
               else None)
        if why is None or not self.config.failover.enabled:
            return False
        await self._fail_over(record, states, f"{record.primary.node}'s server "
                              f"{record.primary.host}:{record.primary.port}, being promoted, "
                              f"{why}")
        return True

    async def _mark_ready(self, record: GroupRecord, states: list[ServerState]) -> None:
        """The keeper beside the chosen server promotes it; once it is writable, a second
        record of the same epoch tells every agent (and `binkeeper primary`) it is ready."""
        chosen = _state_at(states, record.primary)
        if chosen is None or not chosen.reachable or chosen.read_only or not chosen.semi_sync:
            return
        ready = dataclasses.replace(record, ready=True, term=self.timeline.term)
        if not await self._record(ready):
            return  # the next leader sees the server writable and records it
        log.info("%s's server %s is the primary, ready (epoch %d)", record.primary.node,
                 chosen.address, record.epoch)
        if self.failovers and self.failovers[-1]["epoch"] == record.epoch:
            self.failovers[-1]["ready_s"] = round(time.monotonic() - self._lost_at, 3)

    async def _check_restarted(self, record: GroupRecord, states: list[ServerState]) -> None:
        """A ready primary found read-only restarted (fenced, its unacknowledged tail cut):
        it is not ready until its keeper has caught it up with everything committed and
        made it writable again — recorded, so clients and the source leave it meanwhile."""
        state = _state_at(states, record.primary)
        if state is None or not state.reachable or not state.read_only:
            return
        again = dataclasses.replace(record, epoch=record.epoch + 1, reason="restarted",
                                    committed_gtid=self.timeline.committed_gtid(),
                                    term=self.timeline.term, ready=False)
        if not await self._record(again):
            return
        log.warning("the primary %s restarted read-only: not ready until it has caught up "
                    "with the committed history (epoch %d)", state.address, again.epoch)

    # ---- switchover ------------------------------------------------------------------------

    async def switchover(self, to: str | None) -> dict[str, Any]:
        """Hand the primary over to TO's server (None: the most advanced replica) without
        losing or failing a commit beyond the moment of the switch: the old primary is made
        read-only (commits already waiting get their ACKs), its history is committed, then
        the new one is recorded, catches up, is promoted. Answers once it is ready, with
        timings. Raises NotLeader, ChangeRefused (not possible now: why), ValueError."""
        if to is not None:
            check_node_id(to, "to")
        if self.timeline.role != "leader":
            raise NotLeader(self.timeline.leader)
        if self._switching:
            raise ChangeRefused("a switchover is already in progress")
        record = self.timeline.group_record()
        if record is None or not record.for_clients:
            raise ChangeRefused("no ready primary to switch over from"
                                + (f" (epoch {record.epoch}, {record.reason})" if record else ""))
        self._switching = True
        try:
            return await self._switch(record, to)
        finally:
            self._switching = False

    async def _switch(self, record: GroupRecord, to: str | None) -> dict[str, Any]:
        started = time.monotonic()
        old = (record.primary.host, record.primary.port)
        states = await self.probe_all()
        candidates = [s for s in self._candidates(states) if to is None or s.node == to]
        choice = choose_candidate(candidates, old, self.config.preferred_leader)
        if choice.server is None:
            named = f"{to}'s server" if to else "any server"
            why = self.errant.get(to, "") if to else ""
            raise ChangeRefused(f"cannot switch over to {named}: " + (
                f"it holds {why}, which the quorum never committed" if why else choice.reason))
        target = choice.server
        handover = dataclasses.replace(record, epoch=record.epoch + 1, reason="switchover",
                                       committed_gtid=self.timeline.committed_gtid(),
                                       term=self.timeline.term, handover_to=target.node)
        self._handing_over = True
        try:
            return await self._hand_over(record, handover, target, started)
        finally:
            self._handing_over = False

    async def _hand_over(self, record: GroupRecord, handover: GroupRecord,
                         target: ServerState, started: float) -> dict[str, Any]:
        old = (record.primary.host, record.primary.port)
        await self.timeline.record_group(handover)
        log.warning("switchover from %s:%d to %s's server %s: the old primary goes read-only "
                    "(epoch %d)", *old, target.node, target.address, handover.epoch)
        try:
            with trio.fail_after(HANDOVER_TIMEOUT):
                drained = await self._drained(record)
        except trio.TooSlowError:
            why = (f"{record.primary.host}:{record.primary.port} was not read-only with its "
                   f"history committed within {HANDOVER_TIMEOUT:.0f}s")
            await self._abort_handover(handover, why)
            raise ChangeRefused(f"switchover abandoned: {why}; it stays the primary") from None
        fenced_s = time.monotonic() - started
        new = GroupRecord(
            epoch=handover.epoch + 1,
            primary=PrimaryServer(target.node, target.host, target.port, target.server_id),
            reason="switchover", committed_gtid=drained, term=self.timeline.term,
            ready=False)
        self._lost_at = time.monotonic()
        await self.timeline.record_group(new)
        self._handing_over = False  # the loop marks the new primary ready, as after a failover
        recorded_s = time.monotonic() - started
        entry: dict[str, Any] = {"epoch": new.epoch, "from": f"{old[0]}:{old[1]}",
                                 "to": target.address, "reason": "switchover",
                                 "silent_s": 0.0, "fenced_s": round(fenced_s, 3),
                                 "record_s": round(recorded_s - fenced_s, 3),
                                 "committed_gtid": drained}
        self.failovers.append(entry)
        log.info("recorded %s's server %s as the primary (epoch %d, switchover); its keeper "
                 "promotes it once it has applied %s", target.node, target.address,
                 new.epoch, drained or "nothing")
        with trio.move_on_after(READY_TIMEOUT):
            while True:
                current = self.timeline.group_record()
                if current is not None and current.epoch > new.epoch:
                    raise ChangeRefused(f"the switchover to {target.address} was overtaken: "
                                        f"epoch {current.epoch if current else 0} "
                                        f"({current.reason if current else 'none'})")
                if current is not None and current.epoch == new.epoch and current.ready:
                    break
                await trio.sleep(INTERVAL / 10)
        current = self.timeline.group_record()
        ready = current is not None and current.epoch == new.epoch and current.ready
        ready_s = time.monotonic() - started
        if ready:
            entry["ready_s"] = round(ready_s, 3)
        return {"epoch": new.epoch, "from": entry["from"], "to": target.address,
                "node": target.node, "ready": ready, "fenced_s": entry["fenced_s"],
                "recorded_s": round(recorded_s, 3), "ready_s": round(ready_s, 3),
                "committed_gtid": drained}

    async def _drained(self, record: GroupRecord) -> str:
        """Wait until RECORD's primary is read-only (its keeper acts on the handover record)
        and everything in its binlog is committed; the committed position then."""
        while True:
            state = await trio.to_thread.run_sync(
                probe, record.primary.node, record.primary.host, record.primary.port,
                self.config.mariadb.user, self.config.mariadb.password,
                limiter=self._probes)
            if state.reachable and state.read_only:
                committed = self.timeline.committed_gtid()
                try:
                    if walstore.covers(walstore.parse_position(committed),
                                       walstore.parse_position(state.gtid_binlog_pos)):
                        return committed
                except walstore.GtidError:
                    pass  # unreadable: not drained, the deadline decides
            await trio.sleep(INTERVAL / 20)

    async def _abort_handover(self, record: GroupRecord, why: str) -> None:
        """A handover that will not complete: the old primary stays, writable again."""
        kept = dataclasses.replace(record, epoch=record.epoch + 1, reason="aborted",
                                   term=self.timeline.term, handover_to=None)
        if not await self._record(kept, f"a switchover to {record.handover_to} ended ({why}), "
                                        f"but keeping {record.primary.host}:"
                                        f"{record.primary.port}"):
            return
        log.warning("switchover to %s abandoned (%s): %s:%d stays the primary (epoch %d)",
                    record.handover_to, why, record.primary.host, record.primary.port,
                    kept.epoch)

    async def _record(self, record: GroupRecord, what: str | None = None) -> bool:
        """Propose RECORD and wait until it commits; False when it did not (leadership
        moved), saying so in status and the log as WHAT when given."""
        try:
            await self.timeline.record_group(record)
        except (NotLeader, CommitOutcomeUnknown) as exc:
            if what is not None:
                self._wait(f"{what} did not commit: {exc}")
            return False
        return True

    def _wait(self, reason: str) -> None:
        if reason != self.waiting:  # once per reason, not every half second
            log.warning("%s; retrying", reason)
        self.waiting = reason

    def status(self) -> dict[str, Any]:
        record = self.timeline.group_record()
        primary = record.primary if record is not None else None
        committed = self.timeline.committed_gtid() if self.servers else ""
        return {
            # Only once caught up: the records of an agent that has just started may long
            # have been superseded (it would name a replaced server).
            "primary": record.as_status() if record is not None and record.for_clients
            and self.timeline.record_is_current() else None,
            "promoting": record.as_status() if record is not None and not record.ready
            else None,
            "servers": [_server_status(state, primary, committed, self.errant.get(state.node))
                        for state in self.servers],
            "failover": {"epoch": record.epoch if record is not None else 0,
                         "reason": record.reason if record is not None else None,
                         "switchover_to": record.handover_to if record is not None else None,
                         "waiting": self.waiting, "problems": self.problems,
                         "failovers": self.failovers[-10:]},
        }


def _state_at(states: list[ServerState], server: PrimaryServer) -> ServerState | None:
    """The probe of SERVER's address, if it was probed."""
    return next((s for s in states if (s.host, s.port) == (server.host, server.port)), None)


def _server_status(state: ServerState, primary: PrimaryServer | None,
                   committed: str, errant: str | None) -> dict[str, Any]:
    error = state.error
    if not state.reachable:
        role = "down"
    elif errant:
        # holds writes made around the agents: never chosen, never replicated over
        role, error = "fenced", f"holds {errant}, which the quorum never committed"
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
            "lag": lag(state, committed), "error": error}
