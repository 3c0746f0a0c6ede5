"""The decoder under hypothesis: random bytes and mutated valid streams yield only
ProtocolError or NEED_DATA, never another exception or an oversized allocation."""

from __future__ import annotations

import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent import wire
from tests.wire.test_codec import sample_envelopes

LIMIT = 1 << 20
VALID = b"".join(wire.FrameEncoder().encode(e) for e in sample_envelopes())
FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def drain(data: bytes, chunk: int) -> None:
    decoder = wire.FrameDecoder(max_frame_size=LIMIT)
    try:
        for start in range(0, len(data), chunk):
            decoder.receive_data(data[start : start + chunk])
            while decoder.next_message() is not wire.NEED_DATA:
                pass
    except wire.ProtocolError:
        pass
    assert decoder.buffered <= len(data)


@FUZZ
@given(st.binary(max_size=4096), st.integers(1, 64))
def test_random_bytes(data: bytes, chunk: int) -> None:
    drain(data, chunk)


@FUZZ
@given(st.data(), st.integers(1, 4096))
def test_mutated_valid_streams(data: st.DataObject, chunk: int) -> None:
    stream = bytearray(VALID)
    for _ in range(data.draw(st.integers(1, 8))):
        action = data.draw(st.sampled_from(["flip", "cut", "length", "flags", "insert"]))
        position = data.draw(st.integers(0, max(0, len(stream) - 1)))
        if action == "flip":
            stream[position] ^= 1 << data.draw(st.integers(0, 7))
        elif action == "cut":
            del stream[position:]
        elif action == "length" and len(stream) >= 4:
            struct.pack_into(">I", stream, 0, data.draw(st.integers(0, 2**32 - 1)))
        elif action == "flags" and len(stream) >= 5:
            stream[4] = data.draw(st.integers(0, 255))
        elif action == "insert":
            stream[position:position] = data.draw(st.binary(min_size=1, max_size=16))
        if not stream:
            break
    drain(bytes(stream), chunk)


@FUZZ
@given(st.binary(min_size=1, max_size=2048))
def test_compressed_garbage(body: bytes) -> None:
    drain(struct.pack(">IB", len(body), 1) + body, 512)


@FUZZ
@given(st.binary(max_size=1024))
def test_connection_never_raises_anything_else(data: bytes) -> None:
    for role in ("client", "server"):
        conn = wire.PeerConnection(role)  # type: ignore[arg-type]
        try:
            conn.receive_data(data)
            while conn.next_message() is not wire.NEED_DATA:
                pass
        except wire.ProtocolError:
            pass
