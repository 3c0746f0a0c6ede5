"""A place in the primary's binlog (file and offset), ordered as the binlog is: the one
definition; GTIDs are `walstore.Gtid`."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, order=True, slots=True)
class BinlogPosition:
    """A place in the primary's binlog, ordered: file base name, file number, offset."""

    base: str
    number: int
    offset: int

    @classmethod
    def of(cls, file_name: str, offset: int) -> BinlogPosition:
        base, _, suffix = file_name.rpartition(".")
        if not base or not suffix.isdigit():
            return cls(file_name, 0, offset)
        return cls(base, int(suffix), offset)
