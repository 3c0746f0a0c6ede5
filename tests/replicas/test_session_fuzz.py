"""Coverage beyond random bytes: hypothesis builds well-framed packets — logins right and
wrong, SSL requests, the statements replicas send with hostile values, every command byte
with any payload, COM_BINLOG_DUMP of any shape — cut at arbitrary points, and drives them
through the replication port's session. Whatever arrives, the session answers with packets
or ends the connection; it never raises, never answers after it closed, and holds a bounded
amount of state."""

from __future__ import annotations

import itertools
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.serving import packets
from agent.serving.packets import PacketDecoder, PacketWriter
from agent.serving.queries import MAX_USER_VAR_BYTES, MAX_USER_VARS, QueryContext
from agent.serving.session import MAX_COMMAND, Close, DumpRequest, Session, StartTls
from tests.replicas.test_protocol import SCRAMBLE, login_packet, ssl_request

NAMES = st.sampled_from(["slave_connect_state", "master_heartbeat_period", "slave_until_gtid",
                         "master_binlog_checksum", "rpl_semi_sync_slave", "x", "slave_uuid"])
VALUES = st.one_of(
    st.sampled_from(["'0-1-5'", "'0-1-3,1-2-9'", "'CRC32'", "500000000", "''", "'-1-1'",
                     "99999999999999999999999", "'0-0-0,0-0-1'", "@@global.binlog_checksum",
                     "'1-2'", "'a-b-c'", "'0-4294967296-1'"]),
    st.text(max_size=40).map(lambda text: "'" + text.replace("'", "") + "'"),
)
STATEMENTS = st.one_of(
    st.builds(lambda n, v: f"SET @{n} = {v}", NAMES, VALUES),
    st.sampled_from([
        "SELECT UNIX_TIMESTAMP()", "SELECT @@GLOBAL.SERVER_ID", "SELECT @@gtid_binlog_pos",
        "SHOW VARIABLES LIKE 'SERVER_ID'", "SELECT @slave_connect_state",
        "SELECT binlog_gtid_pos('bin.000001', 4)", "SET NAMES utf8mb4", "DROP TABLE t",
        "SELECT @@nope", "SHOW GLOBAL VARIABLES LIKE '%'", ";", ""]),
    st.text(max_size=200),
)


def command_packet(command: int, body: bytes) -> bytes:
    return PacketWriter(0).frame(bytes([command]) + body)


COMMANDS = st.one_of(
    STATEMENTS.map(lambda q: command_packet(0x03, q.encode())),
    st.builds(lambda pos, flags, sid, name: command_packet(
        0x12, struct.pack("<IHI", pos, flags, sid) + name),
        st.integers(0, 2**32 - 1), st.integers(0, 2**16 - 1), st.integers(0, 2**32 - 1),
        st.binary(max_size=40)),
    st.builds(command_packet, st.integers(0, 255), st.binary(max_size=64)),
    st.binary(max_size=64).map(lambda b: PacketWriter(0).frame(b)),  # empty commands too
    st.just(ssl_request()),
)
OPENINGS = st.sampled_from(["right", "wrong", "ssl", "other-plugin", "none", "garbage"])


def opening(kind: str) -> bytes:
    if kind == "right":
        return login_packet("repl", "pw")
    if kind == "wrong":
        return login_packet("repl", "nope")
    if kind == "ssl":
        return ssl_request()
    if kind == "other-plugin":
        return login_packet("repl", "pw", plugin=b"caching_sha2_password")
    if kind == "garbage":
        return PacketWriter(1).frame(b"\x00\x02" + b"\xff" * 30)
    return b""


def cut(data: bytes, points: list[int]) -> list[bytes]:
    edges = sorted({0, len(data), *(p % (len(data) + 1) for p in points)})
    return [data[a:b] for a, b in itertools.pairwise(edges)]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(OPENINGS, st.lists(COMMANDS, max_size=12), st.lists(st.integers(0, 10**6), max_size=8),
       st.booleans())
def test_any_packets_through_the_session(kind: str, commands: list[bytes], points: list[int],
                                         offer_tls: bool) -> None:
    context = QueryContext(server_id=7, server_version="5.5.5-10.11.99-MariaDB-binkeeper",
                           gtid_binlog_pos="0-1-5")
    session = Session(user="repl", password="pw", context=context, connection_id=1,
                      scramble=SCRAMBLE, tls=offer_tls)
    session.greeting()
    ended = False
    for chunk in cut(opening(kind) + b"".join(commands), points):
        if session.state == "tls":
            session.take_buffered()
            session.tls_started()
        actions = session.receive_data(chunk)
        if ended:
            assert actions == [], "answered after the connection ended"
        for action in actions:
            assert isinstance(action, bytes | Close | DumpRequest | StartTls)
            if isinstance(action, bytes):
                decoder = PacketDecoder(1 << 30)
                decoder.receive_data(action)
                while decoder.next_packet() is not None:
                    pass  # every answer is well-framed
            if isinstance(action, DumpRequest):
                assert session.state == "dump" and 0 <= action.heartbeat_period < 2**64
            if isinstance(action, Close | DumpRequest):
                ended = True
        if session.state in ("dump", "closed"):
            ended = True
    assert len(context.user_vars) <= MAX_USER_VARS
    assert all(len(v) <= MAX_USER_VAR_BYTES for v in context.user_vars.values())


def test_user_variables_are_bounded() -> None:
    context = QueryContext(server_id=7, server_version="v", gtid_binlog_pos="")
    session = Session(user="repl", password="pw", context=context, connection_id=1,
                      scramble=SCRAMBLE)
    session.receive_data(login_packet("repl", "pw"))
    big = "'" + "x" * (MAX_USER_VAR_BYTES + 1) + "'"
    [reply] = session.receive_data(command_packet(0x03, f"SET @a = {big}".encode()))
    assert reply[4] == 0xFF and struct.unpack_from("<H", reply, 5)[0] == 1041
    for index in range(MAX_USER_VARS):
        [reply] = session.receive_data(command_packet(0x03, f"SET @v{index} = 1".encode()))
        assert reply[4] == 0x00
    [reply] = session.receive_data(command_packet(0x03, b"SET @one_more = 1"))
    assert reply[4] == 0xFF and b"at most" in reply
    [reply] = session.receive_data(command_packet(0x03, b"SET @v0 = 2"))  # replacing is fine
    assert reply[4] == 0x00 and context.user_vars["v0"] == "2"
    assert MAX_COMMAND == 1 << 20 and packets.ok_packet()[0] == 0
