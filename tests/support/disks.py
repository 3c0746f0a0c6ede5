"""Small real file systems that fill up: a size-limited tmpfs (we run as root) and a
ballast file that takes its last byte."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest


def mount_tmpfs(directory: Path, size: str) -> None:
    """Mount a tmpfs of SIZE (e.g. "8m") on DIRECTORY; skips the test when it cannot."""
    directory.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                           str(directory)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.decode().strip()}")


def unmount(directory: Path) -> None:
    # Lazy: a process that still has a file open there must not keep the mount alive.
    subprocess.run(["umount", "-l", str(directory)], check=False)


def fill(directory: Path) -> Path:
    """Fill DIRECTORY's file system to the last byte; returns the ballast file."""
    ballast = directory / "ballast"
    fd = os.open(ballast, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for size in (1 << 20, 1 << 16, 4096, 1):  # big pieces first, then to the last byte
            try:
                while os.write(fd, b"\0" * size):
                    pass
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
    finally:
        os.close(fd)
    return ballast
