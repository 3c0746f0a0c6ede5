"""Binlog events between transactions, as stored in BINLOG_META records.

FORMAT_DESCRIPTION, ROTATE, GTID_LIST, BINLOG_CHECKPOINT, STOP and any event type we do not
know that arrives outside a transaction are kept verbatim, so exports and replicas can be
given the primary's own file structure (its FORMAT_DESCRIPTION decides how row events
parse). The record payload names the binlog file the event is in, because the event itself
does not:

    u8 file name length | file name (ASCII) | the event, exactly as the primary sent it

Events the primary makes up for a dump (heartbeats, the artificial ROTATE, a
FORMAT_DESCRIPTION resent with position 0) are not part of its binlog and are not stored.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.binlog.events import HEARTBEAT, LOG_EVENT_ARTIFICIAL_F, Event
from agent.binlog.positions import BinlogPosition


class MetaRecordError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class BinlogMeta:
    file_name: str
    event: Event

    @property
    def position(self) -> BinlogPosition:
        return BinlogPosition.of(self.file_name, self.event.next_pos)

    def encode(self) -> bytes:
        name = self.file_name.encode("ascii")
        if len(name) > 255:
            raise MetaRecordError(f"binlog file name of {len(name)} bytes is too long")
        return bytes([len(name)]) + name + self.event.raw

    @classmethod
    def decode(cls, payload: bytes) -> BinlogMeta:
        if not payload or len(payload) < 1 + payload[0]:
            raise MetaRecordError("binlog metadata record is shorter than its file name")
        end = 1 + payload[0]
        return cls(payload[1:end].decode("ascii"), Event.parse(payload[end:]))


def is_stored_meta(event: Event) -> bool:
    """Whether an event seen outside a transaction belongs to the primary's binlog."""
    return (
        event.type_code != HEARTBEAT
        and not event.flags & LOG_EVENT_ARTIFICIAL_F
        and event.next_pos > 0
    )


def is_new(position: BinlogPosition, last_stored: BinlogPosition | None) -> bool:
    """False for an event already stored: the primary resends a file's first events
    when a dump starts inside it."""
    if last_stored is None or position.base != last_stored.base:
        return True
    return position > last_stored
