"""The replication protocol as a sans-I/O state machine: no trio, no protobuf, no clock,
no files. Drive it with tick()/step()/propose()/flushed() and act on ready()."""

from consensus.log import LogStorage
from consensus.membership import Membership, MembershipError
from consensus.messages import (
    AppendRequest,
    AppendResponse,
    Entry,
    Heartbeat,
    HeartbeatResponse,
    Message,
    RecordKind,
    TermStart,
    TimeoutNow,
    VoteRequest,
    VoteResponse,
    sender,
)
from consensus.node import (
    Config,
    ConfigChangeError,
    HardState,
    Node,
    NotLeader,
    Progress,
    ProgressState,
    Ready,
    Role,
    Status,
)
from consensus.proposals import PendingProposals

__all__ = [
    "AppendRequest",
    "AppendResponse",
    "Config",
    "ConfigChangeError",
    "Entry",
    "HardState",
    "Heartbeat",
    "HeartbeatResponse",
    "LogStorage",
    "Membership",
    "MembershipError",
    "Message",
    "Node",
    "NotLeader",
    "PendingProposals",
    "Progress",
    "ProgressState",
    "Ready",
    "RecordKind",
    "Role",
    "Status",
    "TermStart",
    "TimeoutNow",
    "VoteRequest",
    "VoteResponse",
    "sender",
]
