"""The import rules in .importlinter hold (import-linter's `lint-imports`), and they bite:
the same contracts run over a copy of the code with a planted upward import must fail."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = str(Path(sys.executable).parent / "lint-imports")
PACKAGES = ("agent", "consensus", "walstore")


def lint(cwd: Path) -> subprocess.CompletedProcess[str]:
    # PYTHONPATH first: the packages of CWD, not the installed (editable) ones.
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    return subprocess.run([LINT_IMPORTS, str(cwd / ".importlinter"), "--no-cache"],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_import_rules_hold() -> None:
    result = lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


# (file, line planted, what lint-imports must say): one per contract.
PLANTS = [
    ("consensus/quorum.py", "import trio", "consensus is not allowed to import trio"),
    ("walstore/gtid.py", "import agent.config", "walstore is not allowed to import agent"),
    ("walstore/gtid.py", "import socket", "walstore is not allowed to import socket"),
    ("agent/node/loop.py", "from agent.ops import admin",
     "agent.node is not allowed to import agent.ops"),
    ("agent/process.py", "from agent.harness import workload",
     "Illegal imports of protected package agent.harness"),
    ("agent/cli/__init__.py", "from agent.cli import demo",
     "agent.__main__ is not allowed to import agent.harness"),
    ("agent/ops/admin.py", "import consensus", "agent.ops is not allowed to import consensus"),
    ("agent/binlog/positions.py", "from agent.binlog import meta",
     "No cycles are allowed in agent.binlog"),
    ("agent/node/loop.py", "import prometheus_client",
     "agent.node is not allowed to import prometheus_client"),
]


@pytest.mark.parametrize(("path", "line", "message"), PLANTS,
                         ids=[f"{p}:{line}" for p, line, _ in PLANTS])
def test_import_rules_catch_a_planted_violation(
        tmp_path: Path, path: str, line: str, message: str) -> None:
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / ".importlinter", tmp_path / ".importlinter")
    with (tmp_path / path).open("a") as planted:
        planted.write(f"\n{line}  # planted\n")
    result = lint(tmp_path)
    assert result.returncode != 0, result.stdout
    assert message in result.stdout, result.stdout
