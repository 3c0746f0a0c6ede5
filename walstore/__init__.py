"""walstore: one timeline's log on disk — segments of framed records, group-commit fsync,
torn-tail repair, and an atomically replaced control file. Knows nothing of sockets,
protobuf or MariaDB."""

from walstore._control import Control, Membership
from walstore._record import Record, RecordKind
from walstore._store import RepairedTail, WalStore
from walstore._verify import VerifyReport, verify
from walstore.errors import (
    CorruptionError,
    DiskFullError,
    NotARecordBoundary,
    RecordTooLarge,
    SyncInProgress,
    TruncateBelowCommit,
    WalError,
)

__all__ = [
    "Control",
    "CorruptionError",
    "DiskFullError",
    "Membership",
    "NotARecordBoundary",
    "Record",
    "RecordKind",
    "RecordTooLarge",
    "RepairedTail",
    "SyncInProgress",
    "TruncateBelowCommit",
    "VerifyReport",
    "WalError",
    "WalStore",
    "verify",
]
