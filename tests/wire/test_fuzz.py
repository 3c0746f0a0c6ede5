"""The decoder under hypothesis: random bytes, mutated valid streams and compressed frames
of any size yield only ProtocolError or NEED_DATA, never another exception or an
oversized allocation.

"Oversized" is measured (tracemalloc, the peak of Python allocations while decoding): at
most a few times the input, plus what one frame may decompress to (the maximum frame size)
and what decoding it takes. Without the decompression bound a 4-MiB zstd bomb — a few
hundred bytes on the wire — would allocate its 4 MiB here.
"""

from __future__ import annotations

import struct
import tracemalloc

import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent import wire
from agent.wire.frames import FLAG_ZSTD
from tests.wire.test_codec import sample_envelopes

LIMIT = 1 << 20


def allowed_peak(input_size: int) -> int:
    # The input, copied a few times over (buffer, frame body, protobuf parse), plus one
    # frame's worth of decompressed bytes kept in pieces and joined once.
    return 8 * input_size + 2 * LIMIT + (256 << 10)
VALID = b"".join(wire.FrameEncoder().encode(e) for e in sample_envelopes())
FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def drain(data: bytes, chunk: int) -> None:
    decoder = wire.FrameDecoder(max_frame_size=LIMIT)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        try:
            for start in range(0, len(data), chunk):
                decoder.receive_data(data[start : start + chunk])
                while decoder.next_message() is not wire.NEED_DATA:
                    pass
        except wire.ProtocolError:
            pass
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert peak <= allowed_peak(len(data)), (
        f"decoding {len(data)} bytes allocated {peak} bytes at the peak")


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


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(1, 4 * LIMIT), st.binary(min_size=1, max_size=16), st.booleans())
def test_compressed_frames_of_any_size(size: int, pattern: bytes, envelope: bool) -> None:
    """Real zstd frames that decompress to anything up to 4x the maximum frame size: the
    ones above it (bombs) are refused without decompressing them whole."""
    plain = (pattern * (size // len(pattern) + 1))[:size]
    if envelope:  # a well-formed message around it, so small ones decode successfully
        plain = wire.peer_pb2.Envelope(
            heartbeat=wire.peer_pb2.Heartbeat(leader_id=plain.hex()[:size])).SerializeToString()
    compressor = zstandard.ZstdCompressor(level=3).compressobj()
    body = compressor.compress(plain) + compressor.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
    assert len(body) < LIMIT
    drain(struct.pack(">IB", len(body), FLAG_ZSTD) + body, 1 << 16)


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
