"""The group's servers and the choices made about them, sans-I/O (docs/failover.md).

Probes (agent/mariadb/probe.py) fill in a ServerState per server; the functions here say
what is wrong with one, which server to adopt as the primary, and which replica to promote.
Every refusal names its reason, so status and logs can say why nothing happened.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import walstore

# What every server of a group must run with (DESIGN.md): variable -> the value needed.
REQUIRED_OPTIONS: Mapping[str, str] = {
    "log_bin": "ON",
    "log_slave_updates": "ON",
    "binlog_format": "ROW",
    "binlog_checksum": "CRC32",
    "gtid_strict_mode": "ON",
}


@dataclass(frozen=True)
class ServerState:
    node: str  # the agent beside it
    host: str
    port: int
    reachable: bool = False
    error: str | None = None  # why it could not be probed
    server_id: int = 0
    read_only: bool = True
    gtid_binlog_pos: str = ""  # what it has written to its binlog
    gtid_slave_pos: str = ""  # what it has applied as a replica
    options: Mapping[str, str] = field(default_factory=dict)  # REQUIRED_OPTIONS' variables
    rpl_status: str = ""  # Rpl_status: AUTH_MASTER unless started --init-rpl-role=SLAVE
    # How read_only got its value (SYSTEM_VARIABLES.GLOBAL_VALUE_ORIGIN): COMPILE-TIME means
    # it was never set, so the server starts writable; SQL means set since start (unknown).
    read_only_origin: str = ""
    semi_sync: bool = False  # commits wait for an ACK, never falling back to asynchronous

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Choice:
    server: ServerState | None  # None: nothing may be chosen now
    reason: str  # why this one, or why none


def config_problems(state: ServerState) -> list[str]:
    """What must be set on STATE's server before it may be chosen as primary, each naming
    the option; empty when it is fit."""
    problems = [f"{state.node}'s server {state.address}: set {name}={needed} "
                f"(it is {state.options.get(name, 'unset')})"
                for name, needed in REQUIRED_OPTIONS.items()
                if state.options.get(name, "").upper() != needed]
    if state.reachable and state.server_id == 0:
        problems.append(f"{state.node}'s server {state.address}: set a server_id")
    # Start options, so that a server that crashes comes back fenced with its
    # unacknowledged tail cut (MARIADB.md); '' when not probed (never guessed).
    # (AUTH_MASTER is the default; with the option it is IDLE_SLAVE, ACTIVE_SLAVE while a
    # replica thread runs, seen on 10.11)
    if state.rpl_status == "AUTH_MASTER":
        problems.append(f"{state.node}'s server {state.address}: start it with "
                        f"--init-rpl-role=SLAVE (Rpl_status is {state.rpl_status})")
    if state.read_only_origin == "COMPILE-TIME" or (
            state.read_only_origin in ("CONFIG", "COMMAND-LINE") and not state.read_only):
        problems.append(f"{state.node}'s server {state.address}: start it with "
                        "--read-only=ON (it starts writable)")
    return problems


def duplicate_server_ids(states: Iterable[ServerState]) -> list[str]:
    """Servers sharing a server_id (replicas would drop each other's events)."""
    seen: dict[int, list[ServerState]] = {}
    for state in states:
        if state.reachable:
            seen.setdefault(state.server_id, []).append(state)
    return [f"server_id {server_id} is used by "
            + " and ".join(f"{s.node}'s server {s.address}" for s in same)
            for server_id, same in sorted(seen.items()) if len(same) > 1]


def _position(state: ServerState) -> dict[int, walstore.Gtid]:
    """What a server holds: its binlog (a primary, or a replica with log_slave_updates)."""
    try:
        return walstore.parse_position(state.gtid_binlog_pos or state.gtid_slave_pos)
    except walstore.GtidError:
        return {}  # unreadable: ranks last


def _advanced(states: Sequence[ServerState], preferred: str | None) -> list[ServerState]:
    """Most advanced first (a server whose position covers another's ranks before it);
    ties by the preferred node, then node id."""
    def key(state: ServerState) -> tuple[int, int, str]:
        position = _position(state)
        covered = sum(1 for other in states
                      if other is not state and walstore.covers(position, _position(other)))
        return (-covered, 0 if state.node == preferred else 1, state.node)
    return sorted(states, key=key)


def choose_adopted(states: Sequence[ServerState], preferred: str | None = None) -> Choice:
    """The primary of a group the agents take over: its one writable server; when none is
    writable, the most advanced well-configured one. Two writable servers are refused."""
    servers = _distinct(states)
    writable = [s for s in servers if s.reachable and not s.read_only]
    if len(writable) > 1:
        names = " and ".join(f"{s.node}'s server {s.address}" for s in writable)
        return Choice(None, f"two writable servers, {names}: make all but the primary "
                            "read_only=ON")
    if writable:
        return Choice(writable[0], f"the one writable server, {writable[0].address}")
    fit = [s for s in servers if s.reachable and not config_problems(s)]
    if not fit:
        return Choice(None, "no reachable, well-configured server to make the primary")
    best = _advanced(fit, preferred)[0]
    return Choice(best, f"no writable server; {best.address} is the most advanced")


def choose_candidate(states: Sequence[ServerState], failed: tuple[str, int],
                     preferred: str | None = None) -> Choice:
    """The replica to promote when the primary at FAILED (host, port) is lost: reachable,
    read-only, well-configured, most advanced."""
    candidates, passed_over = [], []
    for s in _distinct(states):
        if (s.host, s.port) == failed:
            continue
        problems = config_problems(s) if s.reachable and s.read_only else []
        if not s.reachable or not s.read_only:
            passed_over.append(f"{s.node}'s server {s.address}: "
                               + ("down" if not s.reachable else "writable"))
        elif problems:
            passed_over += problems  # each names the server and the option to set
        else:
            candidates.append(s)
    if not candidates:
        return Choice(None, "no live, well-configured replica to promote"
                      + (f" ({'; '.join(passed_over)})" if passed_over else ""))
    best = _advanced(candidates, preferred)[0]
    return Choice(best, f"the most advanced live replica, {best.address}")


def _distinct(states: Sequence[ServerState]) -> list[ServerState]:
    """One state per server (agents sharing a server report it once: the first node)."""
    seen: set[tuple[str, int]] = set()
    out = []
    for state in sorted(states, key=lambda s: s.node):
        if (state.host, state.port) not in seen:
            seen.add((state.host, state.port))
            out.append(state)
    return out


def lag(state: ServerState, committed: str) -> int | None:
    """Transactions committed by the quorum that STATE's server has not applied yet (per
    domain, by sequence number); None when it cannot be told (down, unreadable)."""
    if not state.reachable:
        return None
    try:
        quorum = walstore.parse_position(committed)
    except walstore.GtidError:
        return None
    held = _position(state)
    return sum(max(0, gtid.seq_no - (held[domain].seq_no if domain in held else 0))
               for domain, gtid in quorum.items())


MAX_NAMED = 20  # errant GTIDs named (the newest); more are counted
MAX_WALK = 1000  # earlier sequence numbers looked at below one errant GTID


def errant_gtids(position: str, holds: Callable[[str], bool], *, earlier: bool = False
                 ) -> str:
    """The GTIDs of POSITION (a server's gtid_binlog_pos) that HOLDS says are not in the
    history — by GTID, server id included (a stray write reuses a low sequence number) — as
    text; '' when none.

    EARLIER, with POSITION a server's @@gtid_binlog_state (the newest GTID of each domain
    and server id): the newest errant GTID is not all — an old primary cut off with two
    commit groups waiting holds two — so below each, the same server id's earlier sequence
    numbers are named too, down to the first one the history holds, and never at or below
    a GTID of the state, in that domain, that the history holds (what the server has there
    came from others)."""
    try:
        newest = [walstore.Gtid.parse(item) for item in position.split(",") if item.strip()]
        if not earlier:
            newest = sorted(walstore.parse_position(position).values())
    except walstore.GtidError as exc:
        return f"an unreadable GTID position ({exc})"
    floor: dict[int, int] = {}
    for gtid in newest:
        if holds(str(gtid)):
            floor[gtid.domain] = max(floor.get(gtid.domain, 0), gtid.seq_no)
    named: list[str] = []
    for gtid in sorted(newest):
        if holds(str(gtid)):
            continue
        run = [str(gtid)]
        lowest = (max(floor.get(gtid.domain, 0), gtid.seq_no - MAX_WALK) if earlier
                  else gtid.seq_no - 1)
        for seq_no in range(gtid.seq_no - 1, lowest, -1):
            text = str(walstore.Gtid(gtid.domain, gtid.server_id, seq_no))
            if holds(text):
                break
            run.append(text)
        named += reversed(run)
    shown = ", ".join(named[-MAX_NAMED:])
    return (f"{len(named) - MAX_NAMED} more before " if len(named) > MAX_NAMED else "") + shown
