"""The choices about a group's servers (sans-I/O), and GROUP records as the log holds them."""

from __future__ import annotations

import dataclasses
import json

import pytest

import consensus
from agent.failover.group import (
    REQUIRED_OPTIONS,
    ServerState,
    choose_adopted,
    choose_candidate,
    config_problems,
    duplicate_server_ids,
    errant_gtids,
    lag,
)
from agent.node import translate
from agent.node.group_record import GroupRecord, GroupRecordError, PrimaryServer

GOOD = dict(REQUIRED_OPTIONS)


def server(node: str, port: int, *, writable: bool = False, gtid: str = "0-1-10",
           server_id: int | None = None, reachable: bool = True,
           options: dict[str, str] | None = None) -> ServerState:
    return ServerState(node, "127.0.0.1", port, reachable=reachable,
                       server_id=server_id if server_id is not None else port,
                       read_only=not writable, gtid_binlog_pos=gtid,
                       options=GOOD if options is None else options)


def test_the_one_writable_server_is_adopted() -> None:
    states = [server("a1", 1, gtid="0-1-5"), server("a2", 2, writable=True, gtid="0-1-3"),
              server("a3", 3, gtid="0-1-9")]
    choice = choose_adopted(states)
    assert choice.server is states[1] and "one writable" in choice.reason


def test_two_writable_servers_are_refused_naming_both() -> None:
    choice = choose_adopted([server("a1", 1, writable=True), server("a2", 2, writable=True),
                             server("a3", 3)])
    assert choice.server is None
    assert "a1's server 127.0.0.1:1 and a2's server 127.0.0.1:2" in choice.reason


def test_without_a_writable_server_the_most_advanced_fit_one_is_adopted() -> None:
    states = [server("a1", 1, gtid="0-1-5,1-2-3"), server("a2", 2, gtid="0-1-7,1-2-3"),
              server("a3", 3, gtid="0-1-9", options={**GOOD, "log_slave_updates": "OFF"})]
    assert choose_adopted(states).server is states[1]  # a3 is ahead but misconfigured
    tied = [server("a1", 1, gtid="0-1-7"), server("a2", 2, gtid="0-1-7")]
    assert choose_adopted(tied).server is tied[0]  # node id breaks the tie
    assert choose_adopted(tied, preferred="a2").server is tied[1]  # preferred first
    down = [server("a1", 1, reachable=False)]
    assert choose_adopted(down).server is None


def test_agents_sharing_one_server_count_it_once() -> None:
    same = [server("a2", 7, writable=True), server("a1", 7, writable=True)]
    choice = choose_adopted(same)
    assert choice.server is not None and choice.server.node == "a1"


def test_the_failover_candidate_is_a_live_fit_replica() -> None:
    states = [server("a1", 1, gtid="0-1-20"),  # the lost primary's server
              server("a2", 2, gtid="0-1-9"), server("a3", 3, gtid="0-1-12"),
              server("a4", 4, gtid="0-1-15", reachable=False),
              server("a5", 5, gtid="0-1-19", writable=True)]
    assert choose_candidate(states, failed=("127.0.0.1", 1)).server is states[2]
    none = choose_candidate([server("a1", 1), server("a2", 2, reachable=False)],
                            failed=("127.0.0.1", 1))
    assert none.server is None and "no live" in none.reason


def test_misconfiguration_names_the_option() -> None:
    state = server("a1", 1, options={**GOOD, "binlog_format": "MIXED", "gtid_strict_mode": "OFF"})
    problems = config_problems(state)
    assert any("set binlog_format=ROW (it is MIXED)" in p for p in problems)
    assert any("set gtid_strict_mode=ON" in p for p in problems)
    assert config_problems(server("a2", 2)) == []
    dupes = duplicate_server_ids([server("a1", 1, server_id=5), server("a2", 2, server_id=5)])
    assert dupes == ["server_id 5 is used by a1's server 127.0.0.1:1 and a2's server "
                     "127.0.0.1:2"]


def test_group_records_round_trip_and_garbage_is_refused() -> None:
    record = GroupRecord(1, PrimaryServer("a2", "10.0.0.2", 3306, 2), "adopted", "0-1-9", 3)
    assert GroupRecord.decode(record.encode()) == record
    for bad in (b"", b"{", b"[]", b'{"epoch": 1}',
                record.encode().replace(b'"adopted"', b'"guessed"'),
                record.encode().replace(b'"a2"', b'"bad id!"'),
                record.encode().replace(b"3306", b"-1")):
        with pytest.raises(GroupRecordError):
            GroupRecord.decode(bad)


def test_a_peer_cannot_send_a_group_record_that_does_not_decode() -> None:
    good = consensus.Entry(0, 1, consensus.RecordKind.GROUP, GroupRecord(
        1, PrimaryServer("a1", "h", 1, 1), "failover", "", 1).encode())
    bad = consensus.Entry(0, 1, consensus.RecordKind.GROUP, b'{"primary": 7}')
    translate.check(consensus.AppendRequest(1, "a2", 0, 0, 0, (good,)))
    with pytest.raises(translate.TranslationError, match="not a GROUP record"):
        translate.check(consensus.AppendRequest(1, "a2", 0, 0, 0, (bad,)))


def test_lag_counts_committed_transactions_not_applied() -> None:
    assert lag(server("a1", 1, gtid="0-1-10,1-2-5"), "0-1-12,1-2-5") == 2
    assert lag(server("a1", 1, gtid="0-1-10"), "0-1-12,1-2-5") == 7  # a domain it lacks
    assert lag(server("a1", 1, gtid="0-1-12"), "0-1-12") == 0
    assert lag(server("a1", 1, reachable=False), "0-1-12") is None


def test_a_handover_record_keeps_its_primary_from_clients() -> None:
    record = GroupRecord(2, PrimaryServer("a1", "h", 1, 1), "switchover", "0-1-9", 3,
                         handover_to="a2")
    assert GroupRecord.decode(record.encode()) == record
    assert record.ready and not record.for_clients  # ACKed still, written to by no one new
    assert dataclasses.replace(record, handover_to=None).for_clients
    with pytest.raises(GroupRecordError):
        GroupRecord.decode(record.encode().replace(b'"a2"', b'"bad id!"'))
    # Records written before the field existed decode as no handover.
    old = json.loads(record.encode())
    del old["handover_to"]
    assert GroupRecord.decode(json.dumps(old).encode()).handover_to is None


def test_errant_gtids_are_named_exactly() -> None:
    history = {"0-1-10", "0-2-11"}
    assert errant_gtids("0-2-11", history.__contains__) == ""
    # A stray write reuses a low sequence number under its own server id: by GTID, not seq.
    assert errant_gtids("0-3-5,1-1-1", history.__contains__) == "0-3-5, 1-1-1"
    assert "unreadable" in errant_gtids("garbage", history.__contains__)


def test_errant_gtids_below_the_newest_are_named_from_the_binlog_state() -> None:
    history = {f"0-1-{n}" for n in range(1, 206)} | {"0-2-206", "0-2-207", "1-5-3"}
    # An old primary cut off with two commit groups waiting: both named, not only the newest.
    assert errant_gtids("0-1-207", history.__contains__, earlier=True) == "0-1-206, 0-1-207"
    assert errant_gtids("0-1-207", history.__contains__) == "0-1-207"
    # Never below what the server holds from others in that domain.
    assert errant_gtids("0-2-207,0-3-209", history.__contains__, earlier=True) == (
        "0-3-208, 0-3-209")
    assert errant_gtids("0-2-207,1-5-3", history.__contains__, earlier=True) == ""
    many = errant_gtids("0-1-230", history.__contains__, earlier=True)
    assert many.startswith("5 more before 0-1-211, ") and many.endswith("0-1-230")


def test_start_options_are_named_and_keep_a_server_from_being_chosen() -> None:
    fenced = server("a2", 2)
    fenced = dataclasses.replace(fenced, rpl_status="ACTIVE_SLAVE",
                                 read_only_origin="COMMAND-LINE")
    assert config_problems(fenced) == []
    plain = dataclasses.replace(fenced, node="a3", port=3, rpl_status="AUTH_MASTER",
                                read_only_origin="COMPILE-TIME")
    problems = config_problems(plain)
    assert any("--init-rpl-role=SLAVE" in p for p in problems)
    assert any("--read-only=ON" in p for p in problems)
    set_at_runtime = dataclasses.replace(fenced, read_only_origin="SQL")  # unknown: not guessed
    assert config_problems(set_at_runtime) == []
    choice = choose_candidate([plain], ("127.0.0.1", 1))
    assert choice.server is None and "--init-rpl-role=SLAVE" in choice.reason
    assert choose_candidate([plain, fenced], ("127.0.0.1", 1)).server == fenced
