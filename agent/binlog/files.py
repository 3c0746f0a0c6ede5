"""Read MariaDB binlog files: every event with its offset, CRCs verified."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from agent.binlog.events import (
    CHECKSUM_CRC32,
    FORMAT_DESCRIPTION,
    HEADER_SIZE,
    BinlogEventError,
    Event,
    checksum_alg_of_fde,
    event_length_at,
)
from agent.binlog.transactions import Transaction, TransactionGrouper

MAGIC = b"\xfebin"


class BinlogFileError(ValueError):
    def __init__(self, path: Path, offset: int, reason: str) -> None:
        super().__init__(f"{path}: bad event at byte offset {offset}: {reason}")
        self.path = path
        self.offset = offset


def read_events(path: str | Path) -> Iterator[tuple[int, Event]]:
    """(offset, event) for each event of a binlog file; CRC32 checked when announced."""
    path = Path(path)
    data = path.read_bytes()
    if data[:4] != MAGIC:
        raise BinlogFileError(path, 0, "not a binlog file (bad magic)")
    offset = 4
    checksum = False
    while offset < len(data):
        if len(data) - offset < HEADER_SIZE:
            raise BinlogFileError(path, offset, "truncated event header")
        length = event_length_at(data, offset)
        if length < HEADER_SIZE or offset + length > len(data):
            raise BinlogFileError(path, offset, f"implausible event length {length}")
        try:
            event = Event.parse(data[offset : offset + length])
        except BinlogEventError as exc:
            raise BinlogFileError(path, offset, str(exc)) from exc
        if event.type_code == FORMAT_DESCRIPTION:
            checksum = checksum_alg_of_fde(event) == CHECKSUM_CRC32
        if checksum and not event.crc_ok():
            raise BinlogFileError(path, offset, "CRC32 mismatch")
        yield offset, event
        offset += length


def read_transactions(paths: list[Path]) -> Iterator[Transaction]:
    grouper = TransactionGrouper()
    for path in paths:
        for _offset, event in read_events(path):
            transaction = grouper.feed(event)
            if transaction is not None:
                yield transaction
