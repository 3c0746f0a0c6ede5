from __future__ import annotations

import struct
import zlib

import pytest

from agent.binlog_events import FORMAT_DESCRIPTION, HEADER, HEARTBEAT, ROTATE, Event
from agent.binlog_meta import (
    LOG_EVENT_ARTIFICIAL_F,
    BinlogMeta,
    BinlogPosition,
    MetaRecordError,
    is_new,
    is_stored_meta,
)


def event(type_code: int, next_pos: int, flags: int = 0, body: bytes = b"body") -> Event:
    length = HEADER.size + len(body) + 4
    raw = HEADER.pack(0, type_code, 1, length, next_pos, flags) + body
    return Event.parse(raw + struct.pack("<I", zlib.crc32(raw)))


def test_encode_decode_keeps_the_event_verbatim() -> None:
    meta = BinlogMeta("bin.000007", event(FORMAT_DESCRIPTION, 256))
    decoded = BinlogMeta.decode(meta.encode())
    assert decoded == meta and decoded.event.raw == meta.event.raw
    with pytest.raises(MetaRecordError):
        BinlogMeta.decode(b"\x20bin")


def test_positions_order_by_file_number_not_text() -> None:
    assert BinlogPosition.of("bin.999999", 500) < BinlogPosition.of("bin.1000000", 4)
    last = BinlogPosition.of("bin.000002", 300)
    assert not is_new(BinlogPosition.of("bin.000002", 300), last)  # resent at a dump start
    assert not is_new(BinlogPosition.of("bin.000001", 900), last)
    assert is_new(BinlogPosition.of("bin.000002", 301), last)
    assert is_new(BinlogPosition.of("other.000001", 4), last)  # another primary's files
    assert is_new(last, None)


def test_events_made_up_for_the_dump_are_not_stored() -> None:
    assert is_stored_meta(event(ROTATE, 1000))
    assert not is_stored_meta(event(ROTATE, 0, LOG_EVENT_ARTIFICIAL_F))
    assert not is_stored_meta(event(HEARTBEAT, 1000))
    assert not is_stored_meta(event(FORMAT_DESCRIPTION, 0))  # resent with position 0
    assert is_stored_meta(event(0xEE, 2000))  # unknown future events are kept
