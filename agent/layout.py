"""Where an agent keeps things on disk: `data_dir/timelines/<timeline id>/` holds one
timeline's WAL (segments and control file). Later: the offload state beside it."""

from __future__ import annotations

from pathlib import Path

import walstore

TIMELINES = "timelines"


def timeline_dir(data_dir: Path, timeline_id: str) -> Path:
    return data_dir / TIMELINES / timeline_id


def wal_dirs(path: Path) -> list[Path]:
    """The WAL directories PATH names: PATH itself when it is one timeline's WAL directory,
    else every timeline's in an agent's data_dir; [] when it holds no WAL."""
    if walstore.holds_wal(path):
        return [path]
    timelines = path / TIMELINES
    if not timelines.is_dir():
        return []
    return sorted(p for p in timelines.iterdir() if walstore.holds_wal(p))
