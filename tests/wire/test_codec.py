from __future__ import annotations

import os
import struct

import pytest
import zstandard

from agent import wire
from agent.wire import peer_pb2 as pb
from agent.wire.frames import FLAG_ZSTD, HEADER

HELLO = pb.Hello(protocol_version=1, cluster_id="c", timeline_id="ab" * 16, node_id="a1")


def sample_envelopes() -> list[pb.Envelope]:
    records = [
        pb.Record(
            lsn=i * 300,
            term=3,
            kind=pb.RECORD_KIND_DATA,
            payload=os.urandom(50) * 6,
            gtid=f"0-1-{i}",
            continued=i % 2 == 0,
        )
        for i in range(20)
    ]
    return [
        pb.Envelope(
            vote_request=pb.VoteRequest(
                term=4, candidate_id="a2", last_log_term=3, last_lsn=9000, pre_vote=True
            )
        ),
        pb.Envelope(vote_response=pb.VoteResponse(term=4, voter_id="a1", granted=True)),
        pb.Envelope(
            append_request=pb.AppendRequest(
                term=3, leader_id="a1", prev_lsn=10, prev_term=2, commit_lsn=5, records=records
            )
        ),
        pb.Envelope(
            append_response=pb.AppendResponse(
                term=3, node_id="a2", success=False, hint_lsn=7, hint_term=2, last_lsn=99
            )
        ),
        pb.Envelope(heartbeat=pb.Heartbeat(term=3, leader_id="a1", commit_lsn=77)),
        pb.Envelope(heartbeat_response=pb.HeartbeatResponse(term=3, node_id="a3", flush_lsn=8)),
        pb.Envelope(timeout_now=pb.TimeoutNow(term=3, leader_id="a1")),
        pb.Envelope(append_request=pb.AppendRequest(term=3, leader_id="a1")),  # empty batch
    ]


def stream_of(envelopes: list[pb.Envelope], **kwargs: object) -> bytes:
    encoder = wire.FrameEncoder(**kwargs)  # type: ignore[arg-type]
    return b"".join(encoder.encode(e) for e in envelopes)


def decode_all(decoder: wire.FrameDecoder) -> list[pb.Envelope]:
    out = []
    while (envelope := decoder.next_message()) is not wire.NEED_DATA:
        out.append(envelope)
    return out  # type: ignore[return-value]


@pytest.mark.parametrize("compress", [True, False])
def test_whole_stream(compress: bool) -> None:
    envelopes = sample_envelopes() * 3
    decoder = wire.FrameDecoder()
    decoder.receive_data(stream_of(envelopes, compress=compress))
    assert decode_all(decoder) == envelopes
    assert decoder.buffered == 0


def test_one_byte_at_a_time() -> None:
    envelopes = sample_envelopes() * 2
    decoder = wire.FrameDecoder()
    got = []
    for byte in stream_of(envelopes):
        decoder.receive_data(bytes([byte]))
        got += decode_all(decoder)
    assert got == envelopes


def test_trailing_bytes_are_kept_for_the_next_frame() -> None:
    envelopes = sample_envelopes()
    data = stream_of(envelopes)
    first_frame_len = HEADER.size + struct.unpack(">I", data[:4])[0]
    decoder = wire.FrameDecoder()
    decoder.receive_data(data[: first_frame_len + 3])
    assert decode_all(decoder) == envelopes[:1]
    assert decoder.buffered == 3
    decoder.receive_data(data[first_frame_len + 3 :])
    assert decode_all(decoder) == envelopes[1:]


def test_only_record_batches_are_compressed_and_streaming_helps() -> None:
    encoder = wire.FrameEncoder()
    envelopes = sample_envelopes()
    frames = [encoder.encode(e) for e in envelopes]
    flags = [f[4] for f in frames]
    assert flags == [0, 0, FLAG_ZSTD, 0, 0, 0, 0, 0]
    # the same batch again compresses far better against the connection's history
    batch = envelopes[2]
    again = encoder.encode(batch)
    fresh = wire.FrameEncoder().encode(batch)
    assert len(again) < len(fresh) / 3


def test_oversized_length_refused_before_allocation() -> None:
    decoder = wire.FrameDecoder(max_frame_size=1 << 20)
    decoder.receive_data(struct.pack(">IB", 2**31, 0))
    with pytest.raises(wire.ProtocolError, match="exceeds"):
        decoder.next_message()
    assert decoder.buffered == 0
    with pytest.raises(wire.ProtocolError):  # the decoder stays failed
        decoder.receive_data(b"more")


def test_unknown_flags_and_bad_bodies() -> None:
    for frame, match in [
        (struct.pack(">IB", 2, 0x02) + b"\x08\x01", "flags"),
        (struct.pack(">IB", 3, 0) + b"\xff\xff\xff", "protobuf"),
        (struct.pack(">IB", 0, 0), "no message"),
        (struct.pack(">IB", 4, FLAG_ZSTD) + b"junk", "zstd"),
    ]:
        decoder = wire.FrameDecoder()
        decoder.receive_data(frame)
        with pytest.raises(wire.ProtocolError, match=match):
            decoder.next_message()


def test_zstd_bomb_is_bounded() -> None:
    limit = 1 << 20
    body = pb.Envelope(
        append_request=pb.AppendRequest(records=[pb.Record(payload=b"\x00" * (64 << 20))])
    ).SerializeToString()
    compressor = zstandard.ZstdCompressor(level=19).compressobj()
    bomb = compressor.compress(body) + compressor.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
    assert len(bomb) < limit
    decoder = wire.FrameDecoder(max_frame_size=limit)
    decoder.receive_data(struct.pack(">IB", len(bomb), FLAG_ZSTD) + bomb)
    with pytest.raises(wire.ProtocolError, match="expands beyond"):
        decoder.next_message()


def test_encoder_refuses_oversized_frames() -> None:
    encoder = wire.FrameEncoder(max_frame_size=1000, compress=False)
    with pytest.raises(wire.LocalProtocolError):
        encoder.encode(pb.Envelope(heartbeat=pb.Heartbeat(leader_id="x" * 2000)))


def test_handshake_state_machine() -> None:
    client, server = wire.PeerConnection("client"), wire.PeerConnection("server")
    with pytest.raises(wire.LocalProtocolError):
        client.send(sample_envelopes()[0])
    server.receive_data(client.send_hello(HELLO))
    assert server.next_message().hello == HELLO  # type: ignore[union-attr]
    reply = server.send_hello_reply(pb.HelloReply(protocol_version=1, accepted=True))
    client.receive_data(reply)
    assert client.next_message().hello_reply.accepted  # type: ignore[union-attr]
    assert client.established and server.established
    for envelope in sample_envelopes():
        server.receive_data(client.send(envelope))
        assert server.next_message() == envelope
    # a second Hello is a protocol error
    server.receive_data(wire.FrameEncoder().encode(pb.Envelope(hello=HELLO)))
    with pytest.raises(wire.ProtocolError, match="after the handshake"):
        server.next_message()


def test_messages_before_handshake_and_refusal() -> None:
    server = wire.PeerConnection("server")
    server.receive_data(wire.FrameEncoder().encode(sample_envelopes()[0]))
    with pytest.raises(wire.ProtocolError, match="expected hello"):
        server.next_message()

    client, server = wire.PeerConnection("client"), wire.PeerConnection("server")
    server.receive_data(client.send_hello(HELLO))
    server.next_message()
    client.receive_data(server.send_hello_reply(pb.HelloReply(accepted=False, reason="no")))
    client.next_message()
    assert not client.established
    with pytest.raises(wire.LocalProtocolError):
        client.send(sample_envelopes()[0])


def test_check_hello_reasons() -> None:
    ok = dict(cluster_id="c", timeline_id="ab" * 16, known_nodes={"a1", "a2"})
    assert wire.check_hello(HELLO, **ok) is None  # type: ignore[arg-type]
    cases = [
        (
            pb.Hello(protocol_version=9, cluster_id="c", timeline_id="ab" * 16, node_id="a1"),
            "protocol version",
        ),
        (
            pb.Hello(protocol_version=1, cluster_id="x", timeline_id="ab" * 16, node_id="a1"),
            "cluster id",
        ),
        (
            pb.Hello(protocol_version=1, cluster_id="c", timeline_id="cd" * 16, node_id="a1"),
            "timeline",
        ),
        (pb.Hello(protocol_version=1, cluster_id="c", timeline_id="zz", node_id="a1"), "32 hex"),
        (
            pb.Hello(protocol_version=1, cluster_id="c", timeline_id="ab" * 16, node_id="a9"),
            "not a member",
        ),
    ]
    for hello, reason in cases:
        assert reason in (wire.check_hello(hello, **ok) or "")  # type: ignore[arg-type]
