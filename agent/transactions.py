"""Whole MariaDB transactions from a timeline's records.

A transaction larger than a record is stored as `continued` pieces followed by a last piece
that carries its GTID. A change of leader can cut such a sequence short: the new leader's
log may end in the first pieces, which its TERM_START record then commits, and its source
stores the whole transaction again after them. So pieces are joined only within a run that
no other record kind interrupts; an interrupted run is a stored fragment, never served.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import walstore


def whole_transactions(
    records: Iterable[walstore.Record], *, upto_lsn: int | None = None
) -> Iterator[tuple[str, bytes]]:
    """(GTID, transaction bytes) in log order, up to UPTO_LSN (e.g. the commit LSN)."""
    parts: list[bytes] = []
    for record in records:
        if upto_lsn is not None and record.end_lsn > upto_lsn:
            return
        if record.kind is not walstore.RecordKind.DATA:
            parts = []  # a term or membership change cuts an unfinished transaction
            continue
        parts.append(record.payload)
        if not record.continued:
            if record.gtid is not None:
                yield record.gtid, b"".join(parts)
            parts = []
