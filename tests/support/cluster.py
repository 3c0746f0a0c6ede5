"""Real agent processes on loopback for tests and benchmarks: `binkeeper run` per agent.

Each agent dials its peers through a FaultProxy (one per direction), so a test can cut any
link; status comes from each agent's real admin API.
"""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from agent.harness import processes
from tests.support.proxy import FaultProxy, free_port


@dataclass
class AgentProcess:
    node_id: str
    config_path: Path
    data_dir: Path
    peer_port: int
    http_port: int
    log_path: Path
    extra_args: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None
    mysql_port: int | None = None  # the replication port, when the cluster serves replicas
    ca_file: Path | None = None  # the agents run with [tls]: HTTPS, verified against this CA

    @property
    def url(self) -> str:
        scheme = "https" if self.ca_file is not None else "http"
        return f"{scheme}://127.0.0.1:{self.http_port}"

    def start(self) -> None:
        assert self.process is None or self.process.poll() is not None
        log = self.log_path.open("ab")
        # A synthetic load runs in the harness's agent: `binkeeper run` plus the load.
        entry = (["-m", "agent.harness.synthetic"] if "--synthetic-load" in self.extra_args
                 else ["-m", "agent", "run"])
        self.process = subprocess.Popen(
            [sys.executable, *entry, "--config", str(self.config_path), *self.extra_args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        log.close()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return self.process.returncode

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def status(self, timeout: float = 2.0) -> dict[str, Any] | None:
        try:
            context = (ssl.create_default_context(cafile=str(self.ca_file))
                       if self.ca_file is not None else None)
            with urllib.request.urlopen(self.url + "/v1/status", timeout=timeout,
                                        context=context) as response:
                data: dict[str, Any] = json.load(response)
                return data
        except (OSError, ValueError):
            return None

    def timeline(self) -> dict[str, Any] | None:
        status = self.status()
        if not status or not status["timelines"]:
            return None
        timeline: dict[str, Any] = status["timelines"][0]
        return timeline

    def log_tail(self, lines: int = 40) -> str:
        return processes.log_tail(self.log_path, lines)


REPLICATION_USER = "repl"
REPLICATION_PASSWORD = "s3cret"


class Cluster:
    def __init__(
        self,
        root: Path,
        size: int = 3,
        *,
        extra_args: list[str] | None = None,
        consensus: dict[str, int] | None = None,
        use_proxies: bool = True,
        mariadb_port: int | dict[str, int] | None = None,
        preferred_leader: str | None = None,
        serve_replicas: bool = False,
        replication: dict[str, int | bool] | None = None,
        tls_dir: Path | None = None,
    ) -> None:
        """TLS_DIR: ca.pem and NODE.pem / NODE.key per agent; every agent runs with [tls]."""
        self.root = root
        ids = [f"a{i + 1}" for i in range(size)]
        self.agents: dict[str, AgentProcess] = {}
        for node_id in ids:
            data_dir = root / node_id
            data_dir.mkdir(parents=True, exist_ok=True)
            self.agents[node_id] = AgentProcess(
                node_id=node_id,
                config_path=root / f"{node_id}.toml",
                data_dir=data_dir,
                peer_port=free_port(),
                http_port=free_port(),
                log_path=root / f"{node_id}.log",
                extra_args=list(extra_args or []),
                mysql_port=free_port() if serve_replicas else None,
                ca_file=tls_dir / "ca.pem" if tls_dir is not None else None,
            )
        # proxies[(src, dst)] carries src's messages to dst
        self.proxies: dict[tuple[str, str], FaultProxy] = (
            {
                (src, dst): FaultProxy(self.agents[dst].peer_port)
                for src in ids
                for dst in ids
                if src != dst
            }
            if use_proxies
            else {}
        )
        for node_id, agent in self.agents.items():
            lines = [
                f'node_id = "{node_id}"',
                f'data_dir = "{agent.data_dir}"',
                f'listen_peer = "127.0.0.1:{agent.peer_port}"',
                f'listen_http = "127.0.0.1:{agent.http_port}"',
                'cluster_id = "test"',
            ]
            if preferred_leader:
                lines.append(f'preferred_leader = "{preferred_leader}"')
            if agent.mysql_port is not None:
                lines.append(f'listen_mysql = "127.0.0.1:{agent.mysql_port}"')
            for other in ids:
                if other != node_id:
                    port = (
                        self.proxies[(node_id, other)].listen_port
                        if use_proxies
                        else self.agents[other].peer_port
                    )
                    lines += ["[[peers]]", f'id = "{other}"', f'addr = "127.0.0.1:{port}"']
            port_here = (mariadb_port.get(node_id) if isinstance(mariadb_port, dict)
                         else mariadb_port)  # one server for all, or one beside each
            if port_here is not None:
                lines += ["[mariadb]", 'host = "127.0.0.1"', f"port = {port_here}",
                          'user = "root"', 'password = ""']
            if agent.mysql_port is not None:
                lines += ["[replication]", f'user = "{REPLICATION_USER}"',
                          f'password = "{REPLICATION_PASSWORD}"']
                lines += [f"{key} = {str(value).lower() if isinstance(value, bool) else value}"
                          for key, value in (replication or {}).items()]
            if tls_dir is not None:
                lines += ["[tls]", f'ca_file = "{tls_dir / "ca.pem"}"',
                          f'cert_file = "{tls_dir / f"{node_id}.pem"}"',
                          f'key_file = "{tls_dir / f"{node_id}.key"}"']
            if consensus:
                lines.append("[consensus]")
                lines += [f"{key} = {value}" for key, value in consensus.items()]
            agent.config_path.write_text("\n".join(lines) + "\n")

    def add_joining_agent(self, node_id: str, extra_args: list[str] | None = None) -> AgentProcess:
        """A new agent with `join = true` that knows the others' direct addresses."""
        data_dir = self.root / node_id
        data_dir.mkdir(parents=True, exist_ok=True)
        agent = AgentProcess(
            node_id=node_id, config_path=self.root / f"{node_id}.toml", data_dir=data_dir,
            peer_port=free_port(), http_port=free_port(), log_path=self.root / f"{node_id}.log",
            extra_args=list(extra_args or []),
        )
        lines = [
            f'node_id = "{node_id}"', f'data_dir = "{data_dir}"',
            f'listen_peer = "127.0.0.1:{agent.peer_port}"',
            f'listen_http = "127.0.0.1:{agent.http_port}"', 'cluster_id = "test"', "join = true",
        ]
        for other, existing in self.agents.items():
            lines += ["[[peers]]", f'id = "{other}"', f'addr = "127.0.0.1:{existing.peer_port}"']
        agent.config_path.write_text("\n".join(lines) + "\n")
        self.agents[node_id] = agent
        return agent

    def start(self) -> None:
        for agent in self.agents.values():
            agent.start()

    def stop(self) -> None:
        for agent in self.agents.values():
            agent.stop()

    def converged(self) -> bool:
        """Every agent reports the same (commit, flush, last) LSNs."""
        points = {
            (t["commit_lsn"], t["flush_lsn"], t["last_lsn"]) if t else None
            for t in (a.timeline() for a in self.agents.values())
        }
        return len(points) == 1 and None not in points

    def partition(self, isolated: str) -> None:
        for (src, dst), proxy in self.proxies.items():
            if isolated in (src, dst):
                proxy.block()

    def heal(self) -> None:
        for proxy in self.proxies.values():
            proxy.unblock()

    def leader(self, among: list[str] | None = None) -> str | None:
        """The leader that a majority of the (live, listed) agents agree on."""
        names = among or [n for n, a in self.agents.items() if a.alive]
        votes: dict[str, int] = {}
        for name in names:
            timeline = self.agents[name].timeline()
            if timeline and timeline["role"] == "leader":
                votes[name] = votes.get(name, 0) + 1
        return next(iter(votes)) if len(votes) == 1 else None

    def logs(self) -> str:
        return "\n".join(f"--- {n} ---\n{a.log_tail()}" for n, a in self.agents.items())


async def wait_until(
    predicate: Callable[[], Any],
    timeout: float,
    what: str,
    on_fail: Callable[[], str] | None = None,
) -> Any:
    """Poll predicate() (run in a thread: it may do blocking HTTP) until it is truthy.

    Fails naming WHAT after TIMEOUT seconds. The event loop stays free meanwhile, so the
    test's fault proxies keep forwarding.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = await trio.to_thread.run_sync(predicate)
        if value:
            return value
        if time.monotonic() > deadline:
            detail = on_fail() if on_fail else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{detail}")
        await trio.sleep(0.05)


async def wait_tailing(cluster: Cluster) -> str:
    """Wait for a leader that tails the MariaDB primary; returns its id."""
    leader: str = await wait_until(cluster.leader, 15, "a leader", cluster.logs)
    await wait_until(
        lambda: ((cluster.agents[leader].timeline() or {}).get("source") or {}).get(
            "connected"), 15, "the leader to tail the primary", cluster.logs)
    return leader
