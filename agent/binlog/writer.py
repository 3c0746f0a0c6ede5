"""Write standard MariaDB binlog files from a stream of events.

Each file starts with the magic bytes and its FORMAT_DESCRIPTION; a real ROTATE ends it and
names the next. Every event's `next_pos` is set to where it really ends in the file written
(the history may start in the middle of one of the primary's files), and its CRC32 is
recomputed when that changed anything. The FORMAT_DESCRIPTION's "in use" flag is cleared,
so `mariadb-binlog` sees properly closed files.
"""

from __future__ import annotations

import os
from pathlib import Path

from agent.binlog.events import (
    FORMAT_DESCRIPTION,
    LOG_EVENT_BINLOG_IN_USE_F,
    ROTATE,
    event_length_at,
    restamped,
    rotate_target,
)
from agent.binlog.files import MAGIC


class BinlogWriterError(Exception):
    pass


def placed(raw: bytes, offset: int) -> bytes:
    """RAW as written at OFFSET: next_pos = offset + length, "in use" cleared, CRC fixed."""
    in_use = LOG_EVENT_BINLOG_IN_USE_F if raw[4] == FORMAT_DESCRIPTION else 0
    return restamped(raw, next_pos=offset + event_length_at(raw, 0), clear_flags=in_use)


class BinlogDirWriter:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.files: list[Path] = []
        self._handle: object | None = None
        self._file: Path | None = None
        self._offset = 0
        self._next_name: str | None = None

    def start_file(self, name: str) -> None:
        """The next events belong to binlog file NAME (from the dump's artificial ROTATE)."""
        self._next_name = name

    def write(self, raw: bytes) -> None:
        type_code = raw[4]
        if type_code == FORMAT_DESCRIPTION:
            self._open(self._next_name)
        if self._file is None:
            raise BinlogWriterError("an event arrived before any FORMAT_DESCRIPTION")
        event = placed(raw, self._offset)
        with open(self._file, "ab") as handle:
            handle.write(event)
        self._offset += len(event)
        if type_code == ROTATE:
            self._next_name = rotate_target(raw)
            self._close()

    def _open(self, name: str | None) -> None:
        if name is None:
            raise BinlogWriterError("a FORMAT_DESCRIPTION arrived without a file name")
        self._close()
        path = self.directory / os.path.basename(name)
        if path.exists():
            raise BinlogWriterError(f"{path} already exists; restore into an empty directory")
        path.write_bytes(MAGIC)
        self._file, self._offset = path, len(MAGIC)
        self.files.append(path)

    def _close(self) -> None:
        if self._file is not None:
            with open(self._file, "rb+") as handle:
                os.fsync(handle.fileno())
        self._file = None

    def close(self) -> None:
        self._close()
        if self.files:
            fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
