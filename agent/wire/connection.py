"""One peer connection's protocol state: handshake first, then consensus messages.

The dialer ("client") sends Hello and must receive HelloReply(accepted) before anything
else; the acceptor ("server") must receive Hello first and answer it before sending
anything else. Bytes in, envelopes out, like h11; no I/O here.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from typing import Literal

from agent.wire import peer_pb2 as pb
from agent.wire.errors import LocalProtocolError, ProtocolError
from agent.wire.frames import (
    DEFAULT_MAX_FRAME_SIZE,
    NEED_DATA,
    FrameDecoder,
    FrameEncoder,
    _NeedData,
)

PROTOCOL_VERSION = 1
_TIMELINE_ID = re.compile(r"^[0-9a-f]{32}$")


class _State(enum.Enum):
    HANDSHAKE = "handshake"
    OPEN = "open"
    REFUSED = "refused"


def check_hello(
    hello: pb.Hello, *, cluster_id: str, timeline_id: str, known_nodes: Iterable[str]
) -> str | None:
    """Why this Hello must be refused, or None to accept it."""
    if hello.protocol_version != PROTOCOL_VERSION:
        return (
            f"protocol version {hello.protocol_version} is not supported "
            f"(this agent speaks {PROTOCOL_VERSION})"
        )
    if hello.cluster_id != cluster_id:
        return f"cluster id {hello.cluster_id!r} does not match this cluster ({cluster_id!r})"
    if not _TIMELINE_ID.match(hello.timeline_id):
        return f"timeline id {hello.timeline_id!r} is not 32 hex digits"
    if hello.timeline_id != timeline_id:
        return f"timeline {hello.timeline_id} is not served here (this agent has {timeline_id})"
    if hello.node_id not in set(known_nodes):
        return f"node {hello.node_id!r} is not a member of this cluster"
    if hello.server_host and (len(hello.server_host) > 255
                              or not 1 <= hello.server_port <= 65535):
        return f"server address {hello.server_host[:64]!r}:{hello.server_port} is not valid"
    return None


class PeerConnection:
    def __init__(
        self,
        role: Literal["client", "server"],
        *,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        compress: bool = True,
        level: int = 1,
    ) -> None:
        self.role = role
        self._encoder = FrameEncoder(compress=compress, level=level, max_frame_size=max_frame_size)
        self._decoder = FrameDecoder(max_frame_size=max_frame_size)
        self._sent_handshake = False
        self._received_handshake = False
        self._state = _State.HANDSHAKE
        self.peer_hello: pb.Hello | None = None

    @property
    def established(self) -> bool:
        return self._state is _State.OPEN

    @property
    def raw_bytes_sent(self) -> int:
        return self._encoder.raw_bytes

    @property
    def wire_bytes_sent(self) -> int:
        return self._encoder.wire_bytes

    # ---- sending --------------------------------------------------------------------------

    def send_hello(self, hello: pb.Hello) -> bytes:
        if self.role != "client" or self._sent_handshake:
            raise LocalProtocolError("only a client sends Hello, once, first")
        self._sent_handshake = True
        return self._encoder.encode(pb.Envelope(hello=hello))

    def send_hello_reply(self, reply: pb.HelloReply) -> bytes:
        if self.role != "server" or not self._received_handshake or self._sent_handshake:
            raise LocalProtocolError("a server answers the Hello it received, once")
        self._sent_handshake = True
        self._state = _State.OPEN if reply.accepted else _State.REFUSED
        return self._encoder.encode(pb.Envelope(hello_reply=reply))

    def send(self, envelope: pb.Envelope) -> bytes:
        if self._state is not _State.OPEN:
            raise LocalProtocolError(f"cannot send on a connection in state {self._state.value}")
        if envelope.WhichOneof("body") in ("hello", "hello_reply"):
            raise LocalProtocolError("the handshake is over")
        return self._encoder.encode(envelope)

    # ---- receiving ------------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray) -> None:
        self._decoder.receive_data(data)

    def next_message(self) -> pb.Envelope | _NeedData:
        envelope = self._decoder.next_message()
        if envelope is NEED_DATA:
            return NEED_DATA
        assert isinstance(envelope, pb.Envelope)
        kind = envelope.WhichOneof("body")
        if not self._received_handshake:
            expected = "hello" if self.role == "server" else "hello_reply"
            if kind != expected:
                raise ProtocolError(f"expected {expected} first, got {kind}")
            self._received_handshake = True
            if kind == "hello":
                self.peer_hello = envelope.hello
            elif envelope.hello_reply.accepted:
                self._state = _State.OPEN
            else:
                self._state = _State.REFUSED
            return envelope
        if kind in ("hello", "hello_reply"):
            raise ProtocolError(f"{kind} after the handshake")
        if self._state is not _State.OPEN:
            raise ProtocolError(f"{kind} before the handshake completed")
        return envelope
