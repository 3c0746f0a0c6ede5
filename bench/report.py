"""Write a benchmark's results into BENCHMARKS.md, one marked section per benchmark.

A section sits between `<!-- bench:NAME -->` and `<!-- /bench:NAME -->`; rerunning a
benchmark replaces only its own section, so every figure in the file is what its command
printed on its last run.
"""

from __future__ import annotations

import datetime
import os
import platform
import re
from collections.abc import Sequence
from pathlib import Path

BENCHMARKS_MD = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"
HEADER = (
    "# Benchmarks\n\n"
    "Every section below was written by the command shown in it; rerun the command to refresh it.\n"
    "`./run bench` runs them all.\n"
)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def machine_line() -> str:
    return (
        f"{datetime.date.today().isoformat()}, {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}"
    )


def record(name: str, title: str, command: str, body: str, path: Path = BENCHMARKS_MD) -> None:
    """Replace (or append) the section NAME of BENCHMARKS.md with BODY."""
    section = (
        f"<!-- bench:{name} -->\n## {title}\n\n"
        f"Command: `{command}` — {machine_line()}\n\n{body.strip()}\n<!-- /bench:{name} -->"
    )
    text = path.read_text() if path.exists() else HEADER
    pattern = re.compile(
        rf"<!-- bench:{re.escape(name)} -->.*?<!-- /bench:{re.escape(name)} -->", re.DOTALL
    )
    if pattern.search(text):
        text = pattern.sub(lambda _m: section, text)
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)
    print(f"(recorded in {path.name}, section '{name}')")
