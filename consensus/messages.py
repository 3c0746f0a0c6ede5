"""Log entries and protocol messages: frozen dataclasses mirroring agent/wire/peer.proto.

Positions are LSNs: byte offsets in the logical stream of entry payloads. Every position a
message carries (prev, commit, flush, hint) is an entry's END LSN, i.e. a boundary; 0 is
the empty log. Payloads are never empty, so (term, end LSN) names one entry.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NamedTuple


class RecordKind(enum.IntEnum):
    """What a record holds; the one definition, stored on disk as a byte (walstore)."""

    DATA = 0  # one MariaDB transaction (or a piece of one)
    TERM_START = 1  # a new leader's first entry: lets it commit its predecessors' tail
    CONFIG = 2  # a membership configuration, in effect once appended
    BINLOG_META = 3  # a binlog event between transactions; to the core, data like DATA
    GROUP = 4  # a decision about the servers (which is the primary); to the core, data


class Entry(NamedTuple):
    """One log entry: what the core replicates and what the WAL stores as a record (one
    type for both, so reading the log builds no second object per record). A NamedTuple:
    built once per append and once per record read, so construction cost counts."""

    lsn: int  # first payload byte
    term: int
    kind: RecordKind
    payload: bytes
    gtid: str | None = None  # the transaction's GTID, on its last piece
    continued: bool = False  # more pieces of this transaction follow

    @property
    def end_lsn(self) -> int:
        return self.lsn + len(self.payload)


@dataclass(frozen=True, slots=True)
class TermStart:
    term: int
    start_lsn: int  # LSN of the first entry of this term


@dataclass(frozen=True, slots=True)
class VoteRequest:
    term: int
    candidate_id: str
    last_log_term: int
    last_lsn: int
    pre_vote: bool = False
    leadership_transfer: bool = False


@dataclass(frozen=True, slots=True)
class VoteResponse:
    term: int
    voter_id: str
    granted: bool
    pre_vote: bool = False


@dataclass(frozen=True, slots=True)
class AppendRequest:
    term: int
    leader_id: str
    prev_lsn: int
    prev_term: int
    commit_lsn: int  # capped at what the leader knows this follower matches
    entries: tuple[Entry, ...] = ()
    # The leader's log end: a node rebuilding from an empty disk must hold this much before
    # it may vote again (a leader holds everything committed, so this covers it; its
    # commit LSN may lag just after an election).
    rebuild_to: int = 0


@dataclass(frozen=True, slots=True)
class AppendResponse:
    term: int
    node_id: str
    success: bool
    flush_lsn: int = 0  # success: durable and matching the leader's log up to here
    hint_lsn: int = 0  # failure: a position known to match (the follower's commit LSN)
    hint_term: int = 0
    last_lsn: int = 0
    term_history: tuple[TermStart, ...] = ()  # failure: lets the leader find the divergence
    rebuilding: bool = False  # the follower started empty and does not hold the history yet


@dataclass(frozen=True, slots=True)
class Heartbeat:
    term: int
    leader_id: str
    commit_lsn: int
    # Sent only to tell a new commit LSN promptly: the follower does not answer it (the
    # periodic heartbeats are answered and carry liveness), which saves a message each way
    # per commit.
    commit_only: bool = False
    rebuild_to: int = 0  # the leader's log end (see AppendRequest)


@dataclass(frozen=True, slots=True)
class HeartbeatResponse:
    term: int
    node_id: str
    flush_lsn: int
    rebuilding: bool = False  # see AppendResponse


@dataclass(frozen=True, slots=True)
class TimeoutNow:
    term: int
    leader_id: str


Message = (
    VoteRequest
    | VoteResponse
    | AppendRequest
    | AppendResponse
    | Heartbeat
    | HeartbeatResponse
    | TimeoutNow
)


def sender(msg: Message) -> str:
    if isinstance(msg, VoteRequest):
        return msg.candidate_id
    if isinstance(msg, VoteResponse):
        return msg.voter_id
    if isinstance(msg, AppendRequest | Heartbeat | TimeoutNow):
        return msg.leader_id
    return msg.node_id
