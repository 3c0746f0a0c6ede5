"""Scripted scenarios, etcd-raft style: every message delivered in order, fsync at once,
links cut on demand. Each test names the protocol rule it checks."""

from __future__ import annotations

import random

import pytest

import consensus
from consensus import Config, HardState, Membership, Node, NotLeader, RecordKind, Role
from tests.consensus.mem_storage import MemStorage


class Net:
    def __init__(self, ids: list[str], *, pre_vote: bool = True) -> None:
        self.ids = ids
        self.storages = {i: MemStorage() for i in ids}
        self.membership = Membership(1, frozenset(ids))
        self.nodes = {
            i: Node(
                Config(i, election_ticks=10, pre_vote=pre_vote),
                self.storages[i],
                HardState(),
                self.membership,
                random.Random(n),
                0,
            )
            for n, i in enumerate(ids)
        }
        self.cut: set[tuple[str, str]] = set()
        self.hard: dict[str, HardState] = {}
        self.bootstrap()

    def bootstrap(self) -> None:
        """A brand-new cluster: every node starts empty and rebuilding, and each learns the
        others are empty from their pre-votes (as real agents do on their first timeouts)."""
        for node_id in self.ids:
            self.nodes[node_id]._send_pre_votes()  # what a rebuilding node's campaign sends
            self.stabilize()
        assert not any(self.nodes[i].rebuilding for i in self.ids)

    def add(self, node_id: str, membership: Membership) -> None:
        self.ids.append(node_id)
        self.storages[node_id] = MemStorage()
        self.nodes[node_id] = Node(
            Config(node_id), self.storages[node_id], HardState(), membership, random.Random(99), 0
        )

    def isolate(self, node_id: str) -> None:
        self.cut |= {(node_id, o) for o in self.ids} | {(o, node_id) for o in self.ids}

    def heal(self) -> None:
        self.cut.clear()

    def stabilize(self, rounds: int = 200) -> None:
        for _ in range(rounds):
            moved = False
            for node_id in list(self.ids):
                node = self.nodes[node_id]
                while node.has_ready():
                    moved = True
                    ready = node.ready()
                    storage = self.storages[node_id]
                    if ready.hard_state:
                        self.hard[node_id] = ready.hard_state
                    if ready.truncate_to is not None:
                        storage.truncate(ready.truncate_to)
                    for entry in ready.entries:
                        storage.append(entry)
                    storage.synced = len(storage.log)
                    node.flushed(storage.last_lsn(), storage.last_term())
                    for dst, msg in ready.messages:
                        if (node_id, dst) not in self.cut and dst in self.nodes:
                            self.nodes[dst].step(msg)
            if not moved:
                return

    def tick(self, times: int = 1) -> None:
        for _ in range(times):
            for node_id in self.ids:
                self.nodes[node_id].tick()
            self.stabilize()

    def leader(self) -> str:
        leaders = [i for i in self.ids if self.nodes[i].role is Role.LEADER]
        assert len(leaders) == 1, leaders
        return leaders[0]

    def elect(self, node_id: str) -> None:
        self.nodes[node_id].campaign()
        self.stabilize()
        assert self.leader() == node_id

    def payloads(self, node_id: str) -> list[bytes]:
        return [e.payload for e in self.storages[node_id].log if e.kind is RecordKind.DATA]


def test_election_and_replication_commit_at_majority() -> None:
    """§5.2/5.3: a candidate with a majority leads; an entry on a majority is committed."""
    net = Net(["a", "b", "c"])
    net.elect("a")
    leader = net.nodes["a"]
    term_start_end = leader.log.last_lsn()
    assert leader.commit_lsn == term_start_end  # TERM_START committed at once
    end = leader.propose(b"tx1", gtid="0-1-1")
    net.stabilize()
    assert all(net.nodes[i].commit_lsn == end for i in "abc")
    assert all(net.payloads(i) == [b"tx1"] for i in "abc")


def test_new_commit_lsn_is_told_without_a_reply_and_periodic_heartbeats_are_answered() -> None:
    """A commit-only heartbeat carries the commit LSN to followers at once and is not
    answered; liveness (check-quorum) rests on the periodic heartbeats, which are."""
    net = Net(["a", "b", "c"])
    net.elect("a")
    leader = net.nodes["a"]
    end = leader.propose(b"tx1")
    sent: list[tuple[str, object]] = []
    for _ in range(10):  # deliver by hand, recording every message
        for node_id in net.ids:
            node = net.nodes[node_id]
            while node.has_ready():
                ready = node.ready()
                for entry in ready.entries:
                    net.storages[node_id].append(entry)
                node.flushed(net.storages[node_id].last_lsn(), net.storages[node_id].last_term())
                for dst, msg in ready.messages:
                    sent.append((node_id, msg))
                    net.nodes[dst].step(msg)
    commit_only = [m for src, m in sent if isinstance(m, consensus.Heartbeat) and m.commit_only]
    assert commit_only and all(m.commit_lsn == end for m in commit_only)
    assert not any(isinstance(m, consensus.HeartbeatResponse) for _, m in sent)
    assert all(net.nodes[i].commit_lsn == end for i in "bc")
    for _ in range(leader.config.heartbeat_ticks):
        leader.tick()
    periodic = [(dst, m) for dst, m in leader.ready().messages
                if isinstance(m, consensus.Heartbeat)]
    assert periodic and not any(m.commit_only for _, m in periodic)
    follower = net.nodes["b"]
    follower.step(next(m for dst, m in periodic if dst == "b"))
    assert any(isinstance(m, consensus.HeartbeatResponse) for _, m in follower.ready().messages)
    for _ in range(leader.config.election_ticks * 3):  # check-quorum keeps it in office
        net.tick()
    assert net.leader() == "a"


def test_commit_needs_a_majority() -> None:
    net = Net(["a", "b", "c"])
    net.elect("a")
    net.isolate("b")
    net.cut |= {("a", "c")}
    before = net.nodes["a"].commit_lsn
    net.nodes["a"].propose(b"lonely")
    net.stabilize()
    assert net.nodes["a"].commit_lsn == before


def test_partitioned_leader_is_replaced_and_its_suffix_truncated() -> None:
    """§5.3: a divergent uncommitted suffix is truncated when the new leader's log wins."""
    net = Net(["a", "b", "c"])
    net.elect("a")
    net.nodes["a"].propose(b"committed")
    net.stabilize()
    net.isolate("a")
    net.nodes["a"].propose(b"doomed-1")
    net.nodes["a"].propose(b"doomed-2")
    net.stabilize()
    net.tick(25)  # b and c stop hearing from a, and elect one of themselves
    new = next(i for i in "bc" if net.nodes[i].role is Role.LEADER)
    net.nodes[new].propose(b"new")
    net.stabilize()
    net.heal()
    net.tick(5)
    assert net.nodes["a"].role is Role.FOLLOWER
    assert net.payloads("a") == net.payloads(new) == [b"committed", b"new"]


def test_pre_vote_keeps_a_rejoining_node_from_disrupting() -> None:
    """Pre-vote: a node partitioned away does not raise the term of a healthy cluster."""
    net = Net(["a", "b", "c"])
    net.elect("a")
    term = net.nodes["a"].term
    net.isolate("c")
    net.tick(60)  # c times out again and again, but only pre-votes
    assert net.nodes["c"].term == term
    net.heal()
    net.tick(3)
    assert net.leader() == "a" and net.nodes["a"].term == term


def test_without_pre_vote_a_rejoining_node_bumps_the_term() -> None:
    net = Net(["a", "b", "c"], pre_vote=False)
    net.elect("a")
    term = net.nodes["a"].term
    net.isolate("c")
    net.tick(40)
    assert net.nodes["c"].term > term


def test_vote_goes_to_the_most_advanced_log() -> None:
    """§5.4.1: votes compare (last log term, last LSN), never the current term."""
    net = Net(["a", "b", "c"])
    net.elect("a")
    net.cut |= {("a", "c")}
    net.nodes["a"].propose(b"only-a-and-b")
    net.stabilize()
    net.heal()
    net.isolate("a")
    net.nodes["c"].campaign()
    net.stabilize()
    assert net.nodes["c"].role is not Role.LEADER  # b refuses: c's log is behind
    net.nodes["b"].campaign()
    net.stabilize()
    assert net.nodes["b"].role is Role.LEADER


def test_leadership_transfer() -> None:
    net = Net(["a", "b", "c"])
    net.elect("a")
    net.nodes["a"].propose(b"x")
    net.stabilize()
    net.nodes["a"].transfer_leadership("c")
    with pytest.raises(NotLeader):
        net.nodes["a"].propose(b"refused during transfer")
    net.stabilize()
    assert net.leader() == "c"
    assert net.payloads("c") == [b"x"]


def test_catch_up_of_a_far_behind_follower_is_flow_controlled() -> None:
    net = Net(["a", "b", "c"])
    for node in net.nodes.values():
        node.config.max_inflight_bytes = 4096
        node.config.max_batch_bytes = 1024
    net.elect("a")
    net.isolate("c")
    for i in range(200):
        net.nodes["a"].propose(b"%05d" % i + b"y" * 200)
        net.stabilize()
    net.heal()
    net.tick(30)
    assert net.payloads("c") == net.payloads("a")
    assert net.nodes["c"].commit_lsn == net.nodes["a"].commit_lsn


def test_membership_add_learner_promote_and_remove() -> None:
    net = Net(["a", "b", "c"])
    net.elect("a")
    leader = net.nodes["a"]
    leader.propose(b"before")
    net.stabilize()
    with_learner = Membership(0, frozenset("abc"), frozenset({"d"}))
    net.add("d", Membership(2, frozenset("abc"), frozenset({"d"})))
    leader.propose_membership(with_learner)
    with pytest.raises(consensus.ConfigChangeError):  # one change at a time
        leader.propose_membership(Membership(0, frozenset("abcd")))
    net.tick(5)
    assert net.payloads("d") == [b"before"]
    assert leader.membership.learners == {"d"}
    leader.propose_membership(Membership(0, frozenset("abcd")))
    net.tick(5)
    assert leader.membership.voters == {"a", "b", "c", "d"} and leader.membership.generation == 3
    with pytest.raises(consensus.ConfigChangeError):  # two at once
        leader.propose_membership(Membership(0, frozenset("ab")))
    leader.propose_membership(Membership(0, frozenset("abd")))
    net.tick(5)
    assert net.nodes["d"].membership.voters == {"a", "b", "d"}
    end = leader.propose(b"after")
    net.stabilize()
    assert net.nodes["d"].commit_lsn == end


def test_removed_leader_steps_down() -> None:
    net = Net(["a", "b", "c"])
    net.elect("a")
    net.nodes["a"].propose_membership(Membership(0, frozenset("bc")))
    net.tick(30)
    assert net.nodes["a"].role is Role.FOLLOWER
    assert net.leader() in ("b", "c")


def test_a_node_with_a_lost_disk_does_not_vote_until_it_holds_history() -> None:
    """A voter restarted on an empty disk forgot its votes: it must not grant them again."""
    net = Net(["a", "b", "c"])
    net.elect("a")
    net.nodes["a"].propose(b"history")
    net.stabilize()
    # c's disk is replaced: new storage, no term, no vote
    net.storages["c"] = MemStorage()
    net.nodes["c"] = Node(Config("c"), net.storages["c"], HardState(), net.membership,
                          random.Random(7), 0)
    net.isolate("a")
    net.nodes["b"].campaign()
    net.stabilize()
    net.tick(30)
    assert net.nodes["b"].role is not Role.LEADER  # c refuses: it holds no history
    net.heal()
    net.tick(30)  # a (still leader, or re-elected) rebuilds c from its log
    assert net.payloads("c") == [b"history"]
    old = net.leader()
    net.isolate(old)
    net.tick(40)
    # the two others elect one of themselves, which needs c's vote whenever c is not the one
    assert any(net.nodes[i].role is Role.LEADER for i in "abc" if i != old)


def _follower_with_old_log() -> tuple[Node, MemStorage]:
    """A follower holding 0..50 and 50..100 of term 1, durable and acknowledged."""
    storage = MemStorage()
    node = Node(Config("a1"), storage, HardState(), Membership(1, frozenset({"a1", "a2", "a3"})),
                random.Random(1), 0)
    old = (consensus.Entry(0, 1, RecordKind.DATA, b"a" * 50),
           consensus.Entry(50, 1, RecordKind.DATA, b"b" * 50))
    node.step(consensus.AppendRequest(1, "a2", 0, 0, 0, old))
    for entry in node.ready().entries:
        storage.append(entry)
    node.flushed(100, 1)
    node.ready()
    return node, storage


def _acks(node: Node, storage: MemStorage) -> list[int]:
    """Apply one Ready to STORAGE (as a driver would); the acknowledgements it sends."""
    rd = node.ready()
    if rd.truncate_to is not None:
        storage.truncate(rd.truncate_to)
    for entry in rd.entries:
        storage.append(entry)
    return [m.flush_lsn for _dst, m in rd.messages
            if isinstance(m, consensus.AppendResponse) and m.success]


def test_a_flush_report_about_a_replaced_log_is_ignored() -> None:
    """etcd-raft's stableTo: a durability report names (LSN, term); one about entries a
    newer leader's log has replaced acknowledges nothing."""
    node, storage = _follower_with_old_log()
    new = (consensus.Entry(50, 2, RecordKind.DATA, b"c" * 70),)
    node.step(consensus.AppendRequest(2, "a3", 50, 1, 0, new))  # truncates to 50, appends
    node.flushed(100, 1)  # the fsync worker's report about the old log, applied late
    assert all(lsn <= 50 for lsn in _acks(node, storage))
    node.flushed(120, 2)  # the new records on disk: now acknowledged
    assert _acks(node, storage) == [120]


def test_a_flush_report_counts_nothing_beyond_a_pending_truncation() -> None:
    """ABA: a newer leader replaces the tail, a still newer one restores the same entry.
    The report matches (LSN, term) again, but the caller is about to cut that entry from
    its disk (the pending truncation) and write it anew: it is acknowledged only after."""
    node, _storage = _follower_with_old_log()
    node.step(consensus.AppendRequest(2, "a3", 50, 1, 0,
                                      (consensus.Entry(50, 2, RecordKind.DATA, b"c" * 70),)))
    node.step(consensus.AppendRequest(3, "a2", 50, 1, 0,
                                      (consensus.Entry(50, 1, RecordKind.DATA, b"b" * 50),)))
    node.flushed(100, 1)  # (100, term 1) matches the log as it is now
    rd = node.ready()
    assert rd.truncate_to == 50
    assert all(m.flush_lsn <= 50 for _dst, m in rd.messages
               if isinstance(m, consensus.AppendResponse) and m.success)


def test_a_lost_disk_and_a_lagging_voter_cannot_elect_a_leader_without_history() -> None:
    """Found by the simulator (lost disks): history committed on {b, c} while a was away;
    c's disk is lost and b goes down. a (empty log) and c (empty disk) must not elect each
    other — that would replace committed history. c stays rebuilding until a leader that
    holds the history reaches it."""
    net = Net(["a", "b", "c"])
    net.isolate("a")
    net.elect("b")
    net.nodes["b"].propose(b"history")
    net.stabilize()
    assert net.payloads("c") == [b"history"] and net.payloads("a") == []
    net.storages["c"] = MemStorage()  # c's disk is replaced: no term, no vote, no log
    net.nodes["c"] = Node(Config("c"), net.storages["c"], HardState(), net.membership,
                          random.Random(7), 0)
    assert net.nodes["c"].rebuilding
    net.heal()
    net.isolate("b")
    net.tick(60)
    assert not any(net.nodes[i].role is Role.LEADER for i in "ac")
    net.heal()
    net.tick(60)
    assert net.leader() == "b" or net.payloads(net.leader()) == [b"history"]
    assert all(net.payloads(i) == [b"history"] for i in "abc")
    assert not net.nodes["c"].rebuilding


def test_an_ack_queued_before_a_truncation_in_the_same_batch_is_not_sent() -> None:
    """Found by the simulator: a follower answers its old leader's heartbeat ("flushed 100"),
    then, before the caller takes the Ready, a new leader's append cuts that suffix. The
    queued answer would claim records the caller is about to remove."""
    node, _storage = _follower_with_old_log()
    node.step(consensus.Heartbeat(1, "a2", 0))  # answered: flush 100
    node.step(consensus.AppendRequest(2, "a3", 50, 1, 0,
                                      (consensus.Entry(50, 2, RecordKind.DATA, b"c" * 70),)))
    rd = node.ready()
    assert rd.truncate_to == 50
    claims = [m.flush_lsn for _dst, m in rd.messages
              if isinstance(m, consensus.HeartbeatResponse | consensus.AppendResponse)
              and getattr(m, "success", True)]
    assert all(lsn <= 50 for lsn in claims), claims


def test_a_learner_still_rebuilding_is_not_promoted() -> None:
    """A learner that started empty says so in its answers; until it holds what the leader
    held when it first reached it, promoting it would add a voter that votes for nobody
    (found by review: a promoted learner still rebuilding deadlocked the next election)."""
    net = Net(["a", "b", "c"])
    net.elect("a")
    leader = net.nodes["a"]
    net.add("d", Membership(2, frozenset("abc"), frozenset({"d"})))
    assert net.nodes["d"].rebuilding
    leader.propose_membership(Membership(0, frozenset("abc"), frozenset({"d"})))
    net.isolate("d")  # it heard nothing yet
    net.tick(3)
    leader.progress["d"].state = consensus.ProgressState.REPLICATE
    leader.progress["d"].rebuilding = True  # what d's answers say while it rebuilds
    with pytest.raises(consensus.ConfigChangeError, match="not caught up"):
        leader.propose_membership(Membership(0, frozenset("abcd")))
    net.heal()
    net.tick(20)  # d is reached, catches up, and stops rebuilding; its answers say so
    assert not net.nodes["d"].rebuilding and not leader.progress["d"].rebuilding
    leader.propose_membership(Membership(0, frozenset("abcd")))
    net.tick(5)
    assert leader.membership.voters == {"a", "b", "c", "d"}


def test_only_a_term_0_peer_counts_as_new() -> None:
    """Found by the sweep: a peer with an empty log may still have voted (in a term whose
    leader never reached it). A node rebuilding from a lost disk takes a peer for new only
    from a pre-vote for term 1 — the peer's own term still 0 — or it could vote twice in
    one term."""
    node = Node(Config("a"), MemStorage(), HardState(), Membership(1, frozenset("abc")),
                random.Random(3), 0)
    assert node.rebuilding
    for peer in "bc":  # empty logs, but terms that show they took part in elections
        node.step(consensus.VoteRequest(7, peer, 0, 0, pre_vote=True))
    assert node.rebuilding
    for peer in "bc":
        node.step(consensus.VoteRequest(1, peer, 0, 0, pre_vote=True))
    assert not node.rebuilding


def test_a_restart_keeps_what_an_uncommitted_change_replaced() -> None:
    """Found by the sweep: after a restart the core knew only the latest membership, so a
    truncation of an uncommitted change could not roll it back, and a node whose own
    removal was uncommitted never stood for election again. CONFIG payloads now carry the
    membership they replace, and a restarted core reads them from its log's tail."""
    net = Net(["a", "b", "c", "d"])
    net.elect("a")
    leader = net.nodes["a"]
    net.isolate("a")
    end = leader.propose_membership(Membership(0, frozenset("bcd")))  # never committed
    net.stabilize()
    restarted = Node(Config("a"), net.storages["a"], HardState(leader.term, leader.vote,
                                                                leader.commit_lsn),
                     leader.membership, random.Random(5), net.storages["a"].last_lsn())
    assert "a" not in restarted.membership.voters and restarted._promotable()
    assert restarted._config_log == [(end, Membership(1, frozenset("abcd")))]


def test_knows_commit_only_once_caught_up_with_a_current_leader() -> None:
    """What an agent has committed is the group's newest only once it has caught up with a
    leader of its term (agent/failover acts on it: a stale decision must not be acted on)."""
    net = Net(["a", "b", "c"])
    assert not any(net.nodes[i].knows_commit for i in "abc")  # no leader yet
    net.elect("a")
    assert all(net.nodes[i].knows_commit for i in "abc")
    net.isolate("c")
    net.nodes["a"].propose(b"decision-2")
    net.stabilize()
    assert net.nodes["c"].knows_commit  # it does not know it missed anything yet...
    net.tick(25)  # ...until leaderless: a pre-candidate knows nothing current
    assert not net.nodes["c"].knows_commit
    net.heal()
    net.tick(5)
    assert net.nodes["c"].role is Role.FOLLOWER and net.nodes["c"].knows_commit
    assert net.payloads("c") == [b"decision-2"]
