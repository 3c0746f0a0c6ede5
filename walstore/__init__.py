"""walstore: one timeline's log on disk — segments of framed records, group-commit fsync,
torn-tail repair, and an atomically replaced control file. Knows nothing of sockets or
protobuf; of MariaDB only what a GTID looks like (its index). Records are consensus
`Entry` values and memberships `consensus.Membership`: one definition of each."""

from walstore._control import Control
from walstore._store import DEFAULT_MAX_RECORD_SIZE, Durable, RepairedTail, WalStore
from walstore._verify import VerifyReport, holds_wal, verify
from walstore.errors import (
    CorruptionError,
    DiskFullError,
    FsyncFailed,
    NotARecordBoundary,
    RecordTooLarge,
    SyncInProgress,
    TruncateBelowCommit,
    WalError,
)
from walstore.gtid import (
    Gtid,
    GtidError,
    covers,
    domain_of,
    format_position,
    parse_position,
)

__all__ = [
    "DEFAULT_MAX_RECORD_SIZE",
    "Control",
    "CorruptionError",
    "DiskFullError",
    "Durable",
    "FsyncFailed",
    "Gtid",
    "GtidError",
    "NotARecordBoundary",
    "RecordTooLarge",
    "RepairedTail",
    "SyncInProgress",
    "TruncateBelowCommit",
    "VerifyReport",
    "WalError",
    "WalStore",
    "covers",
    "domain_of",
    "format_position",
    "holds_wal",
    "parse_position",
    "verify",
]
