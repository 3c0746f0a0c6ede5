"""The import rules in .importlinter hold (import-linter's `lint-imports`), and they bite:
the same contracts run over a copy of the code with a planted upward import must fail."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = str(Path(sys.executable).parent / "lint-imports")
PACKAGES = ("agent", "consensus", "walstore")


def lint(cwd: Path) -> subprocess.CompletedProcess[str]:
    # PYTHONPATH first: the packages of CWD, not the installed (editable) ones.
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    return subprocess.run([LINT_IMPORTS, "--config", str(cwd / ".importlinter"), "--no-cache"],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_import_rules_hold() -> None:
    result = lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_import_rules_catch_a_planted_violation(tmp_path: Path) -> None:
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / ".importlinter", tmp_path / ".importlinter")
    with (tmp_path / "consensus" / "quorum.py").open("a") as planted:
        planted.write("\nimport trio  # planted: the core must not reach the event loop\n")
    with (tmp_path / "agent" / "node" / "loop.py").open("a") as planted:
        planted.write("\nfrom agent.ops import admin  # planted: an upward import\n")
    result = lint(tmp_path)
    assert result.returncode != 0
    assert "consensus is not allowed to import trio" in result.stdout
    assert "agent.node is not allowed to import agent.ops" in result.stdout
