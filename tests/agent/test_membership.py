"""Membership and leadership changes through the admin API, on real agent processes."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import trio

from tests.agent.test_cluster import assert_identical_history, converge
from tests.support.cluster import Cluster, wait_until

LOAD = ["--synthetic-load", "100:200:2"]


def post(url: str, body: dict[str, Any] | bytes) -> tuple[int, dict[str, Any]]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="POST",
                                     headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def commit(cluster: Cluster, node_id: str) -> int:
    timeline = cluster.agents[node_id].timeline()
    return -1 if timeline is None else int(timeline["commit_lsn"])


async def test_add_learner_promote_remove_and_transfer(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, 3, extra_args=LOAD, use_proxies=False)
    cluster.start()
    try:
        leader: str = await wait_until(cluster.leader, 15, "a leader", cluster.logs)
        members_url = cluster.agents[leader].url + "/v1/timelines/main/members"
        await wait_until(lambda: commit(cluster, leader) > 5000, 15, "commits")

        # a follower refuses changes and names the leader
        follower = next(n for n in cluster.agents if n != leader)
        status, body = await trio.to_thread.run_sync(
            post, cluster.agents[follower].url + "/v1/timelines/main/members",
            {"action": "remove", "id": leader})
        assert status == 421 and body["leader"] == leader

        # malformed changes are refused before they reach the log, naming the field, and
        # the leader lives on (an address "h:abc" used to kill it from its node loop)
        for bad, field in (({"action": "add_learner", "id": "a9", "addr": "h:abc"}, "addr"),
                           ({"action": "add_learner", "id": "bad id!", "addr": "h:1"}, "id"),
                           # no [tls]: the log is not sent in the clear beyond loopback
                           ({"action": "add_learner", "id": "a9", "addr": "10.0.0.9:5454"},
                            "addr: 10.0.0.9:5454 is not a loopback address"),
                           ({"action": "explode", "id": "a9"}, "action"),
                           ({"action": "promote"}, "id")):
            status, body = await trio.to_thread.run_sync(post, members_url, bad)
            assert status == 400 and field in body["error"], (bad, status, body)
        for raw in (b"\xff\xfe{", b"[" * 60_000):  # not UTF-8; nested too deep for json
            status, body = await trio.to_thread.run_sync(post, members_url, raw)
            assert status == 400, body
        status, body = await trio.to_thread.run_sync(
            post, members_url, {"action": "remove", "id": "a9", "pad": "x" * (100 << 10)})
        assert status == 413 and "over 65536 bytes" in body["error"]
        before = commit(cluster, leader)
        await wait_until(lambda: commit(cluster, leader) > before + 2000, 15,
                         "commits after the bad requests", cluster.logs)
        assert cluster.leader() == leader

        # a new agent joins as a learner and is streamed the whole log
        new = cluster.add_joining_agent("a4", LOAD)
        new.start()
        status, body = await trio.to_thread.run_sync(
            post, members_url, {"action": "add_learner", "id": "a4",
                                "addr": f"127.0.0.1:{new.peer_port}"})
        assert status == 200, body
        assert body["learners"] == ["a4"] and "a4" not in body["voters"]
        target = commit(cluster, leader)
        await wait_until(lambda: (t := new.timeline()) is not None and t["flush_lsn"] >= target,
                         20, "a4 to catch up", cluster.logs)

        # two changes at once are refused; promotion of the caught-up learner is accepted
        status, body = await trio.to_thread.run_sync(
            post, members_url, {"action": "add_learner", "id": "a5", "addr": "127.0.0.1:1"})
        assert status == 200  # learner a5 (never started) is fine: it is not a voter
        status, body = await trio.to_thread.run_sync(
            post, members_url, {"action": "remove", "id": "a5"})
        assert status == 200 and "a5" not in body["learners"]
        status, body = await trio.to_thread.run_sync(
            post, members_url, {"action": "promote", "id": "a4"})
        assert status == 200, body
        assert sorted(body["voters"]) == sorted([*cluster.agents])

        # remove a follower and stop it: the remaining three keep committing
        status, body = await trio.to_thread.run_sync(
            post, members_url, {"action": "remove", "id": follower})
        assert status == 200 and follower not in body["voters"]
        cluster.agents[follower].stop()
        before = commit(cluster, leader)
        await wait_until(lambda: commit(cluster, leader) > before + 5000, 15,
                         "commits without the removed member", cluster.logs)

        # hand leadership to the new member
        status, body = await trio.to_thread.run_sync(
            post, cluster.agents[leader].url + "/v1/timelines/main/transfer", {"to": "a4"})
        assert status == 200, body
        assert body["leader"] == "a4"
        await wait_until(lambda: cluster.leader([n for n in cluster.agents if n != follower])
                         == "a4", 10, "a4 to lead", cluster.logs)
        before = commit(cluster, "a4")
        await wait_until(lambda: commit(cluster, "a4") > before + 2000, 15, "a4 to commit")

        del cluster.agents[follower]
        await converge(cluster)
        assert_identical_history(cluster)
    finally:
        cluster.stop()
