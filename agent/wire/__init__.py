"""The agent-to-agent wire protocol: schema (peer.proto), framing, zstd, handshake."""

from agent.wire import peer_pb2
from agent.wire.connection import PROTOCOL_VERSION, PeerConnection, check_hello
from agent.wire.errors import LocalProtocolError, ProtocolError
from agent.wire.frames import (
    DEFAULT_MAX_FRAME_SIZE,
    NEED_DATA,
    FrameDecoder,
    FrameEncoder,
    decode_envelope,
)

__all__ = [
    "DEFAULT_MAX_FRAME_SIZE",
    "NEED_DATA",
    "PROTOCOL_VERSION",
    "FrameDecoder",
    "FrameEncoder",
    "LocalProtocolError",
    "PeerConnection",
    "ProtocolError",
    "check_hello",
    "decode_envelope",
    "peer_pb2",
]
