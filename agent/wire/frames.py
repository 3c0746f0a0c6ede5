"""Sans-I/O framing: `u32 body length (big-endian) | u8 flags | body`.

The body is one serialized `Envelope`. Flag bit 0 says the body is zstd-compressed with the
connection's streaming context: one compressor per direction for the connection's life,
flushed at the end of every frame (FLUSH_BLOCK), so each frame decodes on arrival yet small
frames still compress against everything sent before.

The decoder checks the length field against the maximum frame size before it buffers a
body, and bounds decompressed output the same way, feeding the decompressor slices small
enough that even zstd's most extreme expansion cannot overshoot the limit by much.
"""

from __future__ import annotations

import struct
from typing import Final

import zstandard
from google.protobuf.message import DecodeError

from agent.wire import peer_pb2 as pb
from agent.wire.errors import LocalProtocolError, ProtocolError

HEADER: Final = struct.Struct(">IB")
FLAG_ZSTD: Final = 0x01
KNOWN_FLAGS: Final = FLAG_ZSTD
DEFAULT_MAX_FRAME_SIZE: Final = 32 << 20
# zstd's largest expansion: a 3-byte RLE block header and 1 byte give a 128 KiB block.
_MAX_ZSTD_EXPANSION: Final = 1 << 15


class _NeedData:
    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = _NeedData()


def should_compress(envelope: pb.Envelope) -> bool:
    # Record batches are where the bytes are; votes and acks are too small to gain.
    return (
        envelope.WhichOneof("body") == "append_request" and len(envelope.append_request.records) > 0
    )


class FrameEncoder:
    def __init__(
        self, *, compress: bool = True, level: int = 1, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE
    ) -> None:
        self.max_frame_size = max_frame_size
        self._compressor = zstandard.ZstdCompressor(level=level).compressobj() if compress else None
        self.raw_bytes = 0
        self.wire_bytes = 0

    def encode(self, envelope: pb.Envelope) -> bytes:
        body: bytes = envelope.SerializeToString()
        flags = 0
        raw_size = len(body)
        if self._compressor is not None and should_compress(envelope):
            body = self._compressor.compress(body) + self._compressor.flush(
                zstandard.COMPRESSOBJ_FLUSH_BLOCK
            )
            flags = FLAG_ZSTD
        if len(body) > self.max_frame_size or raw_size > self.max_frame_size:
            raise LocalProtocolError(
                f"frame of {raw_size} bytes exceeds the {self.max_frame_size}-byte maximum"
            )
        self.raw_bytes += raw_size
        self.wire_bytes += len(body) + HEADER.size
        return HEADER.pack(len(body), flags) + body


class FrameDecoder:
    def __init__(self, *, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        self.max_frame_size = max_frame_size
        self._buffer = bytearray()
        self._decompressor = zstandard.ZstdDecompressor().decompressobj()
        self._error: ProtocolError | None = None

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def receive_data(self, data: bytes | bytearray) -> None:
        if self._error is not None:
            raise self._error
        self._buffer += data

    def next_message(self) -> pb.Envelope | _NeedData:
        if self._error is not None:
            raise self._error
        try:
            return self._next()
        except ProtocolError as exc:
            self._error = exc
            self._buffer.clear()
            raise

    def _next(self) -> pb.Envelope | _NeedData:
        buffer = self._buffer
        if len(buffer) < HEADER.size:
            return NEED_DATA
        length, flags = HEADER.unpack_from(buffer)
        if length > self.max_frame_size:
            raise ProtocolError(
                f"frame length {length} exceeds the {self.max_frame_size}-byte maximum"
            )
        if flags & ~KNOWN_FLAGS:
            raise ProtocolError(f"unknown frame flags {flags:#04x}")
        end = HEADER.size + length
        if len(buffer) < end:
            return NEED_DATA
        body = bytes(buffer[HEADER.size : end])
        del buffer[:end]
        if flags & FLAG_ZSTD:
            body = self._decompress(body)
        return decode_envelope(body)

    def _decompress(self, data: bytes) -> bytes:
        out: list[bytes] = []
        produced = 0
        view = memoryview(data)
        position = 0
        try:
            while position < len(view):
                step = max(64, (self.max_frame_size - produced) // _MAX_ZSTD_EXPANSION)
                chunk = self._decompressor.decompress(view[position : position + step])
                position += step
                produced += len(chunk)
                if produced > self.max_frame_size:
                    raise ProtocolError(
                        f"compressed frame expands beyond the {self.max_frame_size}-byte maximum"
                    )
                out.append(chunk)
        except zstandard.ZstdError as exc:
            raise ProtocolError(f"bad zstd data: {exc}") from exc
        return b"".join(out)


def decode_envelope(body: bytes) -> pb.Envelope:
    envelope = pb.Envelope()
    try:
        envelope.ParseFromString(body)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise ProtocolError(f"malformed protobuf body: {exc}") from exc
    if envelope.WhichOneof("body") is None:
        raise ProtocolError("envelope carries no message")
    return envelope
