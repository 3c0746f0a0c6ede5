"""Hostile peers, all the way in: arbitrary (well-framed) messages go through the frame
codec, the protobuf translation and its checks, then the node driver, the consensus core
and the WAL store, as the agent's node loop would run them. A peer can only ever cause a
ProtocolError or TranslationError (its connection is closed); nothing else may escape,
and the node keeps working afterwards."""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import consensus
import walstore
from agent import wire
from agent.node import translate
from agent.node.driver import NodeDriver

MEMBERS = consensus.Membership(1, frozenset({"a1", "a2", "a3"}))
IDS = st.sampled_from(["a2", "a2", "a3", "a1", "zz", "bad id", ""])
LSN = st.integers(0, 4000)
TERM = st.integers(0, 6)


def payloads() -> st.SearchStrategy[bytes]:
    memberships = st.builds(
        lambda voters, learners: consensus.Membership(
            3, frozenset(voters), frozenset(learners)).encode(),
        st.sets(st.sampled_from(["a1", "a2", "a3", "a4", "x y"]), max_size=4),
        st.sets(st.sampled_from(["a4", "a5"]), max_size=2))
    return st.one_of(st.binary(max_size=80), memberships,
                     st.sampled_from([b"{}", b"not json", b'{"generation": "x"}']))


@st.composite
def entries(draw: st.DrawFn, start: int) -> tuple[consensus.Entry, ...]:
    out: list[consensus.Entry] = []
    lsn = start
    for _ in range(draw(st.integers(0, 4))):
        payload = draw(payloads())
        if draw(st.integers(0, 5)) == 0:
            lsn = draw(LSN)  # sometimes the records do not chain
        kind = draw(st.sampled_from(list(consensus.RecordKind)))
        gtid = draw(st.one_of(st.none(), st.sampled_from(["0-1-5", "x", "0-1-é", "1-2-3"])))
        out.append(consensus.Entry(lsn, draw(st.sampled_from([1, 1, 2, 0, 5])), kind, payload,
                                   gtid, draw(st.booleans())))
        lsn += len(payload)
    return tuple(out)


@st.composite
def messages(draw: st.DrawFn) -> object:
    term, sender = draw(TERM), draw(IDS)
    choice = draw(st.integers(0, 8))
    if choice <= 2:  # appends most often, mostly at the start of the log so they land
        prev = draw(st.sampled_from([0, 0, 0, 6])) if draw(st.booleans()) else draw(LSN)
        prev_term = 0 if prev == 0 and draw(st.booleans()) else draw(TERM)
        return consensus.AppendRequest(term, sender, prev, prev_term, draw(LSN),
                                       draw(entries(prev)), rebuild_to=draw(LSN))
    if choice == 3:
        return consensus.AppendResponse(
            term, sender, draw(st.booleans()), draw(LSN), draw(LSN), draw(TERM), draw(LSN),
            tuple(consensus.TermStart(t, s) for t, s in draw(
                st.lists(st.tuples(TERM, LSN), max_size=3))))
    if choice == 4:
        return consensus.VoteRequest(term, sender, draw(TERM), draw(LSN), draw(st.booleans()),
                                     draw(st.booleans()))
    if choice == 5:
        return consensus.VoteResponse(term, sender, draw(st.booleans()), draw(st.booleans()))
    if choice == 6:
        return consensus.Heartbeat(term, sender, draw(LSN), draw(st.booleans()), draw(LSN))
    if choice == 7:
        return consensus.HeartbeatResponse(term, sender, draw(LSN))
    return consensus.TimeoutNow(term, sender)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(messages(), min_size=1, max_size=12), st.integers(0, 3))
def test_hostile_messages_reach_the_core_only_when_sound(batch: list[object], ticks: int) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        store = walstore.WalStore.open(Path(scratch) / "wal")
        driver = NodeDriver[object](node_id="a1", store=store, initial_membership=MEMBERS,
                                    core_config=consensus.Config("a1"), rng=random.Random(1),
                                    send=lambda dst, msg: None)
        encoder, decoder = wire.FrameEncoder(), wire.FrameDecoder()
        for msg in batch:
            decoder.receive_data(encoder.encode(translate.to_envelope(msg)))
            envelope = decoder.next_message()
            assert envelope is not wire.NEED_DATA
            try:
                core_msg = translate.from_envelope(envelope)
            except translate.TranslationError:
                continue  # the transport closes that connection
            driver.core.step(core_msg)
            for _ in range(ticks):
                driver.core.tick()
            while driver.has_ready():  # what the node loop does with each Ready
                driver.apply(driver.ready())
                store.flush()
                driver.durable(store.durable())
        # The node still works: its log reads back and it can still campaign.
        list(store.read(store.first_lsn))
        driver.core.campaign()
        store.close()
