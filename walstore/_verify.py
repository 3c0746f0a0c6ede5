"""Offline verification of a WAL directory: reads everything, changes nothing."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from walstore._control import CONTROL_NAME
from walstore._segment import parse_segment_name
from walstore._store import DEFAULT_MAX_RECORD_SIZE, WalStore
from walstore.errors import CorruptionError


@dataclass(frozen=True)
class VerifyReport:
    path: Path
    segments: int
    records: int
    end_lsn: int
    commit_lsn: int
    damage: CorruptionError | None  # damage that refuses to open
    torn_tail: tuple[Path, int, str] | None  # (file, offset, reason): would be cut on open

    @property
    def sound(self) -> bool:
        return self.damage is None and self.torn_tail is None


def verify(
    path: str | os.PathLike[str], *, max_record_size: int = DEFAULT_MAX_RECORD_SIZE
) -> VerifyReport:
    directory = Path(path)
    store = WalStore(directory, segment_size=1 << 62, max_record_size=max_record_size)
    try:
        store._load(repair=False)
    except CorruptionError as exc:
        return VerifyReport(directory, 0, 0, 0, 0, exc, None)
    segments = store._segments
    records = sum(len(s.ends) for s in segments)
    tail = store.repaired_tail
    torn = (tail.path, tail.offset, tail.reason) if tail else None
    return VerifyReport(
        directory, len(segments), records, store.end_lsn, store.control.commit_lsn, None, torn
    )


def holds_wal(path: str | os.PathLike[str]) -> bool:
    """Whether PATH is a WAL directory: it has a control file or a segment file."""
    directory = Path(path)
    if not directory.is_dir():
        return False
    return any(entry.name == CONTROL_NAME or parse_segment_name(entry.name) is not None
               for entry in directory.iterdir())
