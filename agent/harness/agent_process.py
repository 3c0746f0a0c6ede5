"""One agent as its own OS process (`python -m agent run --config FILE`), for the demo and
the benchmarks: its TOML config written from a few facts, start, kill -9, stop, and its
status read from its real admin API.

Plain loopback, no TLS and no tokens: the config refuses neither on 127.0.0.1.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import subprocess
import sys
import urllib.request
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.harness import processes

REPLICATION_USER = "repl"
REPLICATION_PASSWORD = "s3cret"

_LIVE: weakref.WeakSet[AgentProcess] = weakref.WeakSet()


@dataclass(eq=False)
class AgentProcess:
    node_id: str
    root: Path  # its config, log and data_dir live here
    peer_port: int
    http_port: int
    mysql_port: int  # its replication port: the server beside it replicates from here
    server_port: int  # the MariaDB server beside it ([mariadb])
    peers: dict[str, int] = field(default_factory=dict)  # peer id -> peer port
    primary_timeout_ms: int | None = None  # None: the agent's default
    cluster_id: str = "harness"
    process: subprocess.Popen[bytes] | None = None

    @property
    def config_path(self) -> Path:
        return self.root / f"{self.node_id}.toml"

    @property
    def log_path(self) -> Path:
        return self.root / f"{self.node_id}.log"

    @property
    def data_dir(self) -> Path:
        return self.root / self.node_id

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def write_config(self) -> None:
        lines = [
            f'node_id = "{self.node_id}"',
            f'data_dir = "{self.data_dir}"',
            f'listen_peer = "127.0.0.1:{self.peer_port}"',
            f'listen_http = "127.0.0.1:{self.http_port}"',
            f'listen_mysql = "127.0.0.1:{self.mysql_port}"',
            f'cluster_id = "{self.cluster_id}"',
        ]
        for peer, port in sorted(self.peers.items()):
            lines += ["[[peers]]", f'id = "{peer}"', f'addr = "127.0.0.1:{port}"']
        # root: the controller probes and the keeper promotes and re-points its server.
        lines += ["[mariadb]", 'host = "127.0.0.1"', f"port = {self.server_port}",
                  'user = "root"', 'password = ""']
        lines += ["[replication]", f'user = "{REPLICATION_USER}"',
                  f'password = "{REPLICATION_PASSWORD}"']
        if self.primary_timeout_ms is not None:
            lines += ["[failover]", f"primary_timeout_ms = {self.primary_timeout_ms}"]
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text("\n".join(lines) + "\n")

    def start(self) -> None:
        if self.alive:
            raise RuntimeError(f"agent {self.node_id} is already running")
        if not self.config_path.exists():
            self.write_config()
        with self.log_path.open("ab") as log:
            # Its own session: a Ctrl-C in the terminal reaches the harness, which stops
            # the agents itself, rather than every agent at once.
            self.process = subprocess.Popen(
                [sys.executable, "-m", "agent", "run", "--config", str(self.config_path)],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        _LIVE.add(self)

    def kill(self) -> None:
        """SIGKILL: a crash of the agent process."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (a clean stop), SIGKILL after TIMEOUT."""
        processes.terminate(self.process, timeout)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def status(self, timeout: float = 1.0) -> dict[str, Any] | None:
        """GET /v1/status, or None while it cannot answer."""
        if not self.alive:
            return None
        try:
            with urllib.request.urlopen(self.url + "/v1/status", timeout=timeout) as response:
                data: dict[str, Any] = json.load(response)
                return data
        except (OSError, ValueError):
            return None

    def timeline(self, timeout: float = 1.0) -> dict[str, Any] | None:
        """The status of its one timeline, or None."""
        status = self.status(timeout)
        timelines = (status or {}).get("timelines") or []
        return dict(timelines[0]) if timelines else None

    def log_tail(self, lines: int = 30) -> str:
        return processes.log_tail(self.log_path, lines)


@atexit.register
def _kill_all() -> None:
    for agent in list(_LIVE):
        agent.kill()
