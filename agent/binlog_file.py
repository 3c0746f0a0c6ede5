"""Read MariaDB binlog files: every event with its offset, CRCs verified."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from agent.binlog_events import (
    CHECKSUM_CRC32,
    FORMAT_DESCRIPTION,
    HEADER,
    HEADER_SIZE,
    BinlogEventError,
    Event,
    Transaction,
    TransactionGrouper,
    checksum_alg_of_fde,
)

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
        length = HEADER.unpack_from(data, offset)[3]
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


class BinlogFollower:
    """Follow a live server's binlog files: each poll returns the transactions completed since.

    Reads only whole events past the last offset, so a file still being written is fine.
    """

    def __init__(self, list_files: Callable[[], list[Path]]) -> None:
        self._list_files = list_files
        self._file_index = 0
        self._offset = 4
        self._grouper = TransactionGrouper()

    def poll(self) -> list[Transaction]:
        out: list[Transaction] = []
        files = self._list_files()
        while self._file_index < len(files):
            path = files[self._file_index]
            data = path.read_bytes()
            offset = self._offset
            while len(data) - offset >= HEADER_SIZE:
                length = HEADER.unpack_from(data, offset)[3]
                if length < HEADER_SIZE:
                    raise BinlogFileError(path, offset, f"implausible event length {length}")
                if offset + length > len(data):
                    break  # the rest is still being written
                event = Event.parse(data[offset : offset + length])
                transaction = self._grouper.feed(event)
                if transaction is not None:
                    out.append(transaction)
                offset += length
            self._offset = offset
            if self._file_index + 1 < len(files) and offset == len(data):
                self._file_index += 1  # a newer file exists, so this one is complete
                self._offset = 4
                continue
            break
        return out
