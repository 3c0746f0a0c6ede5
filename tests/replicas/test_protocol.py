"""The replication port's packet layer and session, without sockets."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.serving import packets
from agent.serving.packets import PacketDecoder, PacketWriter
from agent.serving.queries import QueryContext
from agent.serving.session import Close, DumpRequest, Session, StartTls

SCRAMBLE = b"abcdefghijklmnopqrst"


def session(tls: bool = False, require_tls: bool = False) -> Session:
    context = QueryContext(server_id=7, server_version="5.5.5-10.11.99-MariaDB-binkeeper",
                           gtid_binlog_pos="0-1-5")
    return Session(user="repl", password="pw", context=context, connection_id=1,
                   scramble=SCRAMBLE, tls=tls, require_tls=require_tls)


def ssl_request() -> bytes:
    caps = packets.CLIENT_PROTOCOL_41 | packets.CLIENT_SECURE_CONNECTION | packets.CLIENT_SSL
    return PacketWriter(1).frame(struct.pack("<IIB", caps, 1 << 24, 33) + b"\x00" * 23)


def greeting_caps(s: Session) -> int:
    payload = replies([s.greeting()])[0][1]
    rest = payload[payload.index(b"\x00", 1) + 1 + 4 + 8 + 1:]
    low, = struct.unpack_from("<H", rest)
    high, = struct.unpack_from("<H", rest, 2 + 1 + 2)
    return low | high << 16


def test_tls_is_offered_started_and_required() -> None:
    assert not greeting_caps(session()) & packets.CLIENT_SSL
    s = session(tls=True, require_tls=True)
    assert greeting_caps(s) & packets.CLIENT_SSL
    hello = b"\x16\x03\x01 client hello"  # what follows an SSL request without a pause
    assert s.receive_data(ssl_request() + hello) == [StartTls()]
    assert s.take_buffered() == hello  # for the TLS layer
    s.tls_started()
    login = login_packet("repl", "pw")
    encrypted = PacketWriter(2).frame(login[4:])  # the response comes next, as packet 2
    assert replies(s.receive_data(encrypted)) == [(3, packets.ok_packet())]
    # In the clear, with require_tls: MariaDB's require_secure_transport error.
    s = session(tls=True, require_tls=True)
    actions = s.receive_data(login_packet("repl", "pw"))
    [(seq, error)] = replies(actions[:1])
    assert seq == 2 and struct.unpack_from("<H", error, 1)[0] == 3159
    assert isinstance(actions[1], Close) and s.state == "closed"
    # An SSL request where TLS was not offered ends the connection with an error.
    s = session()
    actions = s.receive_data(ssl_request())
    assert isinstance(actions[-1], Close) and "TLS was not offered" in actions[-1].reason


def login_packet(user: str, password: str, plugin: bytes = b"mysql_native_password") -> bytes:
    caps = (packets.CLIENT_PROTOCOL_41 | packets.CLIENT_SECURE_CONNECTION
            | packets.CLIENT_PLUGIN_AUTH)
    auth = packets.native_password_response(SCRAMBLE, password)
    payload = (struct.pack("<IIB", caps, 1 << 24, 33) + b"\x00" * 23 + user.encode() + b"\x00"
               + bytes([len(auth)]) + auth + plugin + b"\x00")
    return PacketWriter(1).frame(payload)


def replies(data: list[bytes | object]) -> list[tuple[int, bytes]]:
    decoder = PacketDecoder(1 << 30)
    for item in data:
        assert isinstance(item, bytes)
        decoder.receive_data(item)
    out = []
    while (packet := decoder.next_packet()) is not None:
        out.append(packet)
    return out


def test_login_then_queries_then_dump_request() -> None:
    s = session()
    greeting = replies([s.greeting()])
    assert greeting[0][1][0] == 10 and b"mysql_native_password" in greeting[0][1]
    assert replies(s.receive_data(login_packet("repl", "pw"))) == [(2, packets.ok_packet())]
    query = PacketWriter(0).frame(b"\x03SELECT @@GLOBAL.gtid_domain_id")
    rows = replies(s.receive_data(query))
    assert [seq for seq, _ in rows] == [1, 2, 3, 4, 5]  # count, column, EOF, row, EOF
    assert rows[3][1] == b"\x010"
    s.receive_data(PacketWriter(0).frame(b"\x03SET @slave_connect_state='0-1-3'"))
    s.receive_data(PacketWriter(0).frame(b"\x03SET @master_heartbeat_period= 500000000"))
    dump = PacketWriter(0).frame(b"\x12" + struct.pack("<IHI", 4, 0, 22) + b"bin.000001")
    [request] = s.receive_data(dump)
    assert isinstance(request, DumpRequest)
    assert (request.gtid_state, request.heartbeat_period, request.server_id,
            request.first_seq) == ("0-1-3", 0.5, 22, 1)


def test_wrong_password_is_refused_with_1045() -> None:
    s = session()
    actions = s.receive_data(login_packet("repl", "wrong"))
    [(_seq, err)] = replies([actions[0]])
    assert err[0] == 0xFF and struct.unpack_from("<H", err, 1)[0] == 1045
    assert b"Access denied for user 'repl'" in err and isinstance(actions[1], Close)


def test_other_plugin_is_switched_to_native_password() -> None:
    s = session()
    [switch] = replies(s.receive_data(login_packet("repl", "pw", b"caching_sha2_password")))
    assert switch[1].startswith(b"\xfemysql_native_password\x00")
    answer = PacketWriter(3).frame(packets.native_password_response(SCRAMBLE, "pw"))
    assert replies(s.receive_data(answer)) == [(4, packets.ok_packet())]


def test_unknown_command_and_statement_get_errors_and_the_session_goes_on() -> None:
    s = session()
    s.receive_data(login_packet("repl", "pw"))
    [(_, err)] = replies(s.receive_data(PacketWriter(0).frame(b"\x1f")))
    assert struct.unpack_from("<H", err, 1)[0] == 1047
    [(_, err)] = replies(s.receive_data(PacketWriter(0).frame(b"\x03DROP DATABASE x")))
    assert err[0] == 0xFF
    assert replies(s.receive_data(PacketWriter(0).frame(b"\x0e"))) == [(1, packets.ok_packet())]


def test_oversized_packet_is_refused_before_it_is_buffered() -> None:
    s = session()
    s.receive_data(login_packet("repl", "pw"))
    actions = s.receive_data(b"\xff\xff\xff\x00")  # announces a 16 MiB command
    assert isinstance(actions[-1], Close) and s.state == "closed"


@settings(max_examples=400, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=8), st.booleans())
def test_garbage_never_crashes_the_session(chunks: list[bytes], logged_in: bool) -> None:
    s = session()
    if logged_in:
        s.receive_data(login_packet("repl", "pw"))
    for chunk in chunks:
        for action in s.receive_data(chunk):
            assert isinstance(action, bytes | Close | DumpRequest)
