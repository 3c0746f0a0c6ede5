"""Every consensus message survives the trip through protobuf and the frame codec."""

from __future__ import annotations

import consensus
from agent import wire
from agent.node import translate
from consensus import Entry, RecordKind, TermStart

CONFIG = consensus.Membership(2, frozenset({"a1", "a2", "a3"}), frozenset({"a4"})).encode()

MESSAGES = [
    consensus.VoteRequest(5, "a1", 4, 9000, pre_vote=True, leadership_transfer=False),
    consensus.VoteResponse(5, "a2", True, pre_vote=True),
    consensus.AppendRequest(
        5,
        "a1",
        100,
        4,
        90,
        (
            Entry(100, 5, RecordKind.TERM_START, b"term 5"),
            Entry(106, 5, RecordKind.DATA, b"\x00" * 300, gtid="0-1-7", continued=True),
            Entry(406, 5, RecordKind.CONFIG, CONFIG),
        ),
        rebuild_to=408,
    ),
    consensus.AppendRequest(5, "a1", 0, 0, 0),
    consensus.AppendResponse(
        5,
        "a3",
        False,
        hint_lsn=40,
        hint_term=2,
        last_lsn=77,
        term_history=(TermStart(1, 0), TermStart(2, 30)),
    ),
    consensus.AppendResponse(5, "a3", True, flush_lsn=406, last_lsn=408),
    consensus.Heartbeat(5, "a1", 406),
    consensus.Heartbeat(5, "a1", 300, commit_only=True, rebuild_to=406),
    consensus.HeartbeatResponse(5, "a2", 400),
    consensus.TimeoutNow(5, "a1"),
]


def test_round_trip_through_the_codec() -> None:
    encoder, decoder = wire.FrameEncoder(), wire.FrameDecoder()
    for msg in MESSAGES:
        decoder.receive_data(encoder.encode(translate.to_envelope(msg)))
        back = translate.from_envelope(decoder.next_message())  # type: ignore[arg-type]
        assert back == msg
        assert translate.sender_of(back) == consensus.sender(msg)
