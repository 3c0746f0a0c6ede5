"""One SQL round trip to a server: what agent/failover/group.py decides on.

Blocking (pymysql), with short timeouts: run it in a worker thread. An unreachable server
is a state too (reachable=False, with the error), never an exception.
"""

from __future__ import annotations

import pymysql

from agent.failover.group import REQUIRED_OPTIONS, ServerState

PROBE_TIMEOUT = 1.0  # seconds, for connecting and for the answer

_QUERY = ("SELECT @@server_id, @@read_only, @@gtid_binlog_pos, @@gtid_slave_pos, "
          # --init-rpl-role=SLAVE is a start option, seen only as Rpl_status IDLE_SLAVE; how
          # read_only got its value tells whether the server starts read-only
          "(SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS "
          "WHERE VARIABLE_NAME = 'RPL_STATUS'), "
          "(SELECT GLOBAL_VALUE_ORIGIN FROM information_schema.SYSTEM_VARIABLES "
          "WHERE VARIABLE_NAME = 'READ_ONLY'), "
          # commits wait for an ACK and never fall back (what a primary must run with)
          "@@rpl_semi_sync_master_enabled = 1 AND @@rpl_semi_sync_master_wait_no_slave = 1 "
          "AND @@rpl_semi_sync_master_timeout = 4294967295, "
          + ", ".join(f"@@{name}" for name in REQUIRED_OPTIONS))


def probe(node: str, host: str, port: int, user: str, password: str,
          timeout: float = PROBE_TIMEOUT) -> ServerState:
    try:
        conn = pymysql.connect(host=host, port=port, user=user, password=password,
                               connect_timeout=max(1, round(timeout)), read_timeout=timeout,
                               write_timeout=timeout)
    except pymysql.err.MySQLError as exc:
        return ServerState(node, host, port, reachable=False, error=_text(exc))
    try:
        with conn.cursor() as cursor:
            cursor.execute(_QUERY)
            row = cursor.fetchone()
    except pymysql.err.MySQLError as exc:
        return ServerState(node, host, port, reachable=False, error=_text(exc))
    finally:
        conn.close()
    assert row is not None
    server_id, read_only, binlog_pos, slave_pos, rpl_status, origin, semi_sync, *options = row
    return ServerState(
        node, host, port, reachable=True, server_id=int(server_id),
        read_only=bool(int(read_only)), gtid_binlog_pos=str(binlog_pos or ""),
        gtid_slave_pos=str(slave_pos or ""), rpl_status=_flag(rpl_status or ""),
        read_only_origin=_flag(origin or ""), semi_sync=bool(int(semi_sync or 0)),
        options={name: _flag(value) for name, value in zip(REQUIRED_OPTIONS, options,
                                                            strict=True)})


def _flag(value: object) -> str:
    """Variables as SHOW VARIABLES spells them: 1/0 are ON/OFF."""
    if isinstance(value, int):
        return "ON" if value else "OFF"
    return str(value.decode() if isinstance(value, bytes) else value).upper()


def _text(exc: pymysql.err.MySQLError) -> str:
    args = exc.args
    return f"{args[0]}: {args[1]}" if len(args) >= 2 else str(exc)
