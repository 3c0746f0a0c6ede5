"""The docker-compose failover demo (docker/), whole, with a real Docker Engine.

One test tells the story a user lives through, on this machine's own `dockerd` (started
and stopped here, its state under /var/cache/binkeeper-docker) with images built without a
registry (docker/docker-compose.local.yml: a debootstrap base, Debian's MariaDB 10.11 and
Prometheus, the agent image from wheels made on the host):

1. `docker compose up -d`: three MariaDB servers that all start read-only, an agent beside
   each (mutual TLS between agents, HTTPS admin APIs), the agents adopt a primary by
   themselves, the schema is made through them, the writer writes;
2. the writer's first acknowledged commits;
3. docker/failover.sh, as a user runs it: SIGKILL of the primary's container, the failover,
   the verdict (every acknowledged commit on the new primary, none refused kept, the other
   replica caught up, no errant GTID) and the time to a writable primary;
4. every query of the Grafana dashboard answered with data by the stack's live Prometheus,
   which also counted the failover (Grafana itself has no package here); the image's
   HEALTHCHECK says every agent is healthy;
5. the killed server started again rejoins as a replica;
6. everything torn down: containers, networks, volumes, the daemon.

Needs root (it runs dockerd and debootstrap); CI runs as root, so there it never skips.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import pytest

from agent.harness.ports import free_port
from tests.docker.engine import DockerEngine, EngineError, prepare_wheels
from tests.docker.stack import AGENTS, Stack, dashboard_queries, is_root, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.slow]

FIRST_COMMITS = 100  # acknowledged commits before the kill


def require_root() -> None:
    if is_root():
        return
    if os.environ.get("CI"):
        pytest.fail("the container test must run in CI, which runs as root")
    pytest.skip("needs root: starts its own Docker Engine (dockerd) and runs debootstrap")


class Clock:
    """How long each step took, printed at the end (pytest -s, or with a failure)."""

    def __init__(self) -> None:
        self.started = self.last = time.monotonic()
        self.steps: list[tuple[str, float]] = []

    def lap(self, step: str) -> None:
        now = time.monotonic()
        self.steps.append((step, now - self.last))
        self.last = now
        print(f"[{now - self.started:6.1f}s] {step}: {self.steps[-1][1]:.1f}s", flush=True)


def test_compose_failover_demo() -> None:
    require_root()
    clock = Clock()
    engine = DockerEngine()
    with engine.locked():
        engine.start()
        clock.lap("dockerd started")
        stack = Stack(engine, prometheus_port=free_port())
        try:
            stack.down()  # whatever a crashed earlier run left
            made = engine.ensure_base_image()
            clock.lap("base image " + ("made (debootstrap, import)" if made else "cached"))
            wheels = prepare_wheels()
            clock.lap(f"{wheels} wheels in docker/wheels")
            stack.build()
            clock.lap("images built")
            try:
                story(stack, clock)
            except (AssertionError, EngineError) as exc:
                raise AssertionError(f"{exc}\n--- compose logs ---\n{stack.logs()}") from exc
        finally:
            stack.down()
            clock.lap("stack down (containers, networks, volumes)")
            engine.stop()
            clock.lap("dockerd stopped")
    total = time.monotonic() - clock.started
    print(f"container test: {total:.1f}s in all: "
          + ", ".join(f"{step} {secs:.1f}s" for step, secs in clock.steps))


def story(stack: Stack, clock: Clock) -> None:
    stack.up()
    clock.lap("docker compose up -d (agents adopted a primary, schema made, writer started)")

    wait_for(lambda: stack.acknowledged() >= FIRST_COMMITS, 120,
             f"the writer's first {FIRST_COMMITS} acknowledged commits", poll=0.5)
    clock.lap(f"{FIRST_COMMITS} commits acknowledged")

    done = stack.failover_script()
    output = done.stdout + done.stderr
    print(output)
    assert done.returncode == 0, f"failover.sh exited {done.returncode}:\n{output}"
    result = parse_result(output)
    killed_host = result["killed"].split(":")[0]
    assert result["passed"], output
    assert result["missing"] == 0 and result["refused_present"] == 0, output
    assert result["new_primary"] != result["killed"], output
    assert result["acked_by_killed"] > 0, "the writer had no commit on the killed primary"
    assert not result["errant"] and result["replicas"], output
    assert result["writable_s"] < 30, output
    state = stack.inspect(killed_host)["State"]
    assert not state["Running"] and state["ExitCode"] == 137, (
        f"{killed_host} was not killed by SIGKILL: {state}")
    clock.lap(f"failover.sh: {killed_host} killed, {result['new_primary']} writable after "
              f"{result['writable_s']:.2f}s, {result['acked']} acknowledged commits all there")

    check_dashboard(stack)
    clock.lap("every dashboard query answered by Prometheus")

    def all_healthy() -> bool:  # the image's HEALTHCHECK: the first runs 10 s after start
        return all(stack.inspect(agent)["State"]["Health"]["Status"] == "healthy"
                   for agent in AGENTS)

    wait_for(all_healthy, 60, "every agent's HEALTHCHECK (/healthz) to pass", poll=1.0)
    clock.lap("agents healthy (HEALTHCHECK)")

    stack.compose("start", killed_host, timeout=60)
    killed = result["killed"]
    wait_for(lambda: (stack.leader_servers() or {}).get(killed) == "replica", 60,
             f"{killed} to rejoin as a replica", poll=0.5)
    clock.lap(f"{killed_host} started again: a replica of its agent")


def parse_result(output: str) -> dict[str, Any]:
    lines = [line for line in output.splitlines() if line.startswith("RESULT ")]
    assert lines, f"failover.sh printed no RESULT line:\n{output}"
    result: dict[str, Any] = json.loads(lines[-1].removeprefix("RESULT "))
    return result


def check_dashboard(stack: Stack) -> None:
    """Every panel's PromQL is valid and returns data from the live Prometheus, which
    scrapes all three agents and counted the failover."""
    queries = dashboard_queries()
    assert len(queries) >= 10, queries
    answers: dict[str, dict[str, Any]] = {}

    def answered() -> bool:
        for title, expr in queries:
            answer = stack.query(expr)
            answers[expr] = answer
            assert answer.get("errorType") != "bad_data", f"panel {title!r}: {answer}"
            if answer.get("status") != "success" or not answer["data"]["result"]:
                return False
        up = stack.query('sum(up{job="binkeeper"})')
        failovers = stack.query('sum(binkeeper_failovers_total{reason="failover"})')
        return (answer_value(up) == 3 and answer_value(failovers) >= 1)

    try:
        wait_for(answered, 60, "data for every dashboard query", poll=1.0)
    except EngineError as exc:
        empty = [f"{expr}: {answers.get(expr)}" for _, expr in queries
                 if not (answers.get(expr) or {}).get("data", {}).get("result")]
        raise AssertionError(f"{exc}; without data:\n" + "\n".join(empty)) from exc


def answer_value(answer: dict[str, Any]) -> float:
    result = (answer.get("data") or {}).get("result") or []
    return float(result[0]["value"][1]) if result else 0.0
