"""The demo's compose stack (docker/docker-compose.yml with the local override) on a
DockerEngine: build, up, the failover script, Prometheus queries, down."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from agent.harness import processes
from tests.docker.engine import REPO, DockerEngine, EngineError, compose_cli, docker_cli, run

T = TypeVar("T")

DOCKER_DIR = REPO / "docker"
COMPOSE_FILES = (DOCKER_DIR / "docker-compose.yml", DOCKER_DIR / "docker-compose.local.yml")
DASHBOARD = DOCKER_DIR / "grafana" / "dashboards" / "binkeeper.json"
AGENTS = ("a1", "a2", "a3")
POLL = 0.25


def wait_for(predicate: Callable[[], T | None], timeout: float, what: str,
             poll: float = POLL) -> T:
    """Poll PREDICATE until it returns something truthy; EngineError naming WHAT after
    TIMEOUT seconds."""
    return processes.wait_for(predicate, timeout, what, poll, EngineError)


class Stack:
    def __init__(self, engine: DockerEngine, prometheus_port: int) -> None:
        self.engine = engine
        self.prometheus_port = prometheus_port

    @property
    def env(self) -> dict[str, str]:
        return {**self.engine.env, "PROMETHEUS_PORT": str(self.prometheus_port)}

    @property
    def compose_command(self) -> list[str]:
        files = [arg for path in COMPOSE_FILES for arg in ("-f", str(path))]
        return [compose_cli(), *files]

    def compose(self, *args: str, timeout: float = 300,
                check: bool = True) -> subprocess.CompletedProcess[str]:
        return run([*self.compose_command, *args], env=self.env, cwd=DOCKER_DIR,
                   timeout=timeout, check=check)

    def build(self) -> None:
        self.compose("build", timeout=900)
        # A rebuild leaves the previous image untagged: keep the cached engine small.
        self.engine.docker("image", "prune", "--force")

    def up(self) -> None:
        """`up -d`: returns once the schema is made and the writer started."""
        self.compose("up", "--detach", timeout=300)

    def down(self) -> None:
        """Containers, networks and volumes (images stay, cached for the next run)."""
        self.compose("down", "--volumes", "--remove-orphans", "--timeout", "10", timeout=120,
                     check=False)

    def logs(self, tail: int = 30) -> str:
        done = self.compose("logs", "--no-color", "--tail", str(tail), timeout=60, check=False)
        return done.stdout + done.stderr

    def container(self, service: str) -> str:
        return self.compose("ps", "--all", "--quiet", service, timeout=30).stdout.strip()

    def inspect(self, service: str) -> dict[str, Any]:
        out = self.engine.docker("inspect", self.container(service)).stdout
        data: list[dict[str, Any]] = json.loads(out)
        return data[0]

    def exec(self, service: str, *command: str,
             timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return self.compose("exec", "-T", service, *command, timeout=timeout, check=False)

    def acknowledged(self) -> int:
        """Commits the writer was told were acknowledged (lines of its log)."""
        done = self.exec("writer", "sh", "-c",
                         "grep -c '^A ' /var/lib/binkeeper/writer/outcomes.log || true")
        text = done.stdout.strip()
        return int(text) if text.isdigit() else 0

    def agent_statuses(self) -> dict[str, dict[str, Any]]:
        """Each agent's GET /v1/status, through `binkeeper status --json` in the writer's
        container (HTTPS verified with the group's CA, the read token); missing if it did
        not answer."""
        script = ('for a in ' + ' '.join(AGENTS) + '; do echo "=== $a"; binkeeper status '
                  '--json --url "https://$a:7676" --ca /public/ca.pem '
                  '--token "$(cat /public/read.token)" || true; done')
        done = self.exec("writer", "sh", "-c", script)
        out: dict[str, dict[str, Any]] = {}
        for chunk in done.stdout.split("=== ")[1:]:
            name, _, body = chunk.partition("\n")
            try:
                out[name.strip()] = json.loads(body)
            except ValueError:
                continue
        return out

    def leader_servers(self) -> dict[str, str] | None:
        """Server address -> role, as the leading agent sees the group."""
        for status in self.agent_statuses().values():
            for timeline in status.get("timelines") or []:
                if timeline.get("role") == "leader":
                    return {str(s["address"]): str(s["role"])
                            for s in timeline.get("servers") or []}
        return None

    def failover_script(self) -> subprocess.CompletedProcess[str]:
        """docker/failover.sh, as a user runs it, with this engine and the override."""
        env = {**self.env, "COMPOSE": " ".join(self.compose_command), "DOCKER": docker_cli()}
        return run(["bash", str(DOCKER_DIR / "failover.sh")], env=env, timeout=300,
                   check=False)

    def query(self, expr: str) -> dict[str, Any]:
        """Prometheus' /api/v1/query answer for EXPR (at now)."""
        url = (f"http://127.0.0.1:{self.prometheus_port}/api/v1/query?"
               + urllib.parse.urlencode({"query": expr}))
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                data: dict[str, Any] = json.load(response)
        except urllib.error.HTTPError as exc:  # 400 with the error for bad PromQL
            data = json.load(exc)
        except (OSError, ValueError) as exc:
            return {"status": "unreachable", "error": str(exc)}
        return data


def dashboard_queries(path: Path = DASHBOARD) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target of every panel of the Grafana dashboard."""
    dashboard = json.loads(path.read_text())
    out = []
    for panel in dashboard.get("panels", []):
        for target in panel.get("targets", []):
            out.append((str(panel.get("title")), str(target["expr"])))
    return out


def is_root() -> bool:
    return os.geteuid() == 0
