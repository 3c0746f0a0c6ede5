from __future__ import annotations

import pytest

from agent.binlog.events import (
    FORMAT_DESCRIPTION,
    HEARTBEAT,
    LOG_EVENT_ARTIFICIAL_F,
    ROTATE,
    Event,
    make_event,
)
from agent.binlog.meta import BinlogMeta, MetaRecordError, is_new, is_stored_meta
from agent.binlog.positions import BinlogPosition


def event(type_code: int, next_pos: int, flags: int = 0, body: bytes = b"body") -> Event:
    return Event.parse(make_event(type_code, 1, body, log_pos=next_pos, flags=flags))


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
