"""Answers to the statements a MariaDB replica (10.6-11.x) sends before it dumps.

The replica's I/O thread (sql/slave.cc) checks the server's clock, server id, checksum
and GTID domain, and passes its start position in user variables; anything it cannot
parse or gets an error for stops replication. Statements are matched after collapsing
whitespace and case, never executed: this server has no SQL engine.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field


@dataclass
class QueryAnswer:
    columns: list[str] | None = None  # None: an OK packet
    rows: list[list[str | None]] = field(default_factory=list)
    error: tuple[int, str] | None = None


ER_NOT_SUPPORTED_YET = 1235
ER_OUT_OF_RESOURCES = 1041
# A replica sets a handful of user variables; a client may not make a session hold more.
MAX_USER_VARS = 64
MAX_USER_VAR_BYTES = 64 << 10
ER_UNKNOWN_COM_ERROR = 1047

_SET_USER_VAR = re.compile(r"^set\s+@(\w+)\s*(?::=|=)\s*(.+)$", re.I | re.S)
_SELECT_USER_VAR = re.compile(r"^select\s+@(\w+)\s*;?$", re.I)
_SELECT_SYSVAR = re.compile(r"^select\s+@@(?:global\.|session\.)?(\w+)(?:\s+limit\s+1)?\s*;?$",
                            re.I)
_SHOW_VARIABLES = re.compile(
    r"^show\s+(?:global\s+|session\s+)?variables\s+like\s+'([^']*)'\s*;?$", re.I)
_BINLOG_GTID_POS = re.compile(r"^select\s+binlog_gtid_pos\s*\(\s*'([^']*)'\s*,\s*(\d+)\s*\)",
                              re.I)


def _unquote(value: str) -> str:
    value = value.strip().rstrip(";").strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    if value.lower() == "@@global.binlog_checksum":
        return "CRC32"
    return value


@dataclass
class QueryContext:
    """What the answers depend on: this agent's identity and the session's variables."""

    server_id: int
    server_version: str
    gtid_binlog_pos: str  # the committed GTID position, for @@gtid_binlog_pos
    timeline: str = "main"
    user_vars: dict[str, str] = field(default_factory=dict)


def answer(query: str, ctx: QueryContext) -> QueryAnswer:
    text = " ".join(query.strip().split())
    lower = text.lower().rstrip(";").strip()
    if lower == "select unix_timestamp()":
        return QueryAnswer(["UNIX_TIMESTAMP()"], [[str(int(time.time()))]])
    if lower == "select version()":
        return QueryAnswer(["VERSION()"], [[ctx.server_version]])
    if lower == "select database()":
        return QueryAnswer(["DATABASE()"], [[None]])
    if match := _SET_USER_VAR.match(text):
        return _set_user_var(match.group(1).lower(), _unquote(match.group(2)), ctx)
    if match := _SELECT_USER_VAR.match(text):
        name = match.group(1)
        return QueryAnswer([f"@{name}"], [[ctx.user_vars.get(name.lower())]])
    if match := _SHOW_VARIABLES.match(text):
        name = match.group(1).lower()
        value = _system_variable(name, ctx)
        rows: list[list[str | None]] = [[name, value]] if value is not None else []
        return QueryAnswer(["Variable_name", "Value"], rows)
    if match := _SELECT_SYSVAR.match(text):
        name = match.group(1).lower()
        value = _system_variable(name, ctx)
        if value is None:
            return QueryAnswer(error=(1193, f"Unknown system variable '{name}'"))
        return QueryAnswer([f"@@{name}"], [[value]])
    if _BINLOG_GTID_POS.match(text):
        # Only GTID replication is offered; an empty answer makes the replica use its own
        # gtid_slave_pos.
        return QueryAnswer(["binlog_gtid_pos"], [[""]])
    if lower.startswith(("set names", "set session", "set autocommit", "set sql_mode",
                         "set character_set", "set time_zone", "set @@session")):
        return QueryAnswer()
    return QueryAnswer(error=(ER_NOT_SUPPORTED_YET,
                              f"Binkeeper serves binlog only; statement not supported: "
                              f"{text[:200]}"))


def _set_user_var(name: str, value: str, ctx: QueryContext) -> QueryAnswer:
    if len(value) > MAX_USER_VAR_BYTES or (
            name not in ctx.user_vars and len(ctx.user_vars) >= MAX_USER_VARS):
        return QueryAnswer(error=(ER_OUT_OF_RESOURCES, (
            f"Out of resources: at most {MAX_USER_VARS} user variables of "
            f"{MAX_USER_VAR_BYTES} bytes per connection")))
    ctx.user_vars[name] = value
    return QueryAnswer()


def _system_variable(name: str, ctx: QueryContext) -> str | None:
    values = {
        "server_id": str(ctx.server_id),
        "gtid_domain_id": "0",
        "binlog_checksum": "CRC32",
        "binlog_format": "ROW",
        "version": ctx.server_version,
        "version_comment": "Binkeeper",
        "binkeeper_timeline": ctx.timeline,
        "gtid_binlog_pos": ctx.gtid_binlog_pos,
        "gtid_current_pos": ctx.gtid_binlog_pos,
        "gtid_strict_mode": "1",
        "log_bin": "ON",
        "server_uuid": None,
        "max_allowed_packet": str(1 << 30),
        "lower_case_table_names": "0",
        "time_zone": "SYSTEM",
        "system_time_zone": "UTC",
        "collation_server": "utf8mb4_general_ci",
        "character_set_server": "utf8mb4",
        "auto_increment_increment": "1",
    }
    # Semi-sync is not offered to replicas: an empty answer turns it off on their side.
    return values.get(name)
