"""The control file: term, vote, commit LSN, term history and membership of one timeline.

    magic "BKCTL\\x00\\x00\\x01" | u32 CRC32C of the body | u32 body length | body (JSON)

Replaced atomically: write a temp file, fsync it, rename it over the old one, fsync the
directory. A crash leaves either the old or the new file, never a mix; a damaged file is
refused with its name, never guessed at.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

from crc32c import crc32c

from consensus.membership import Membership
from walstore.errors import CorruptionError
from walstore.fs import FileSystem

CONTROL_NAME = "control"
_MAGIC = b"BKCTL\x00\x00\x01"
_HEAD = struct.Struct("<8sII")


@dataclass(frozen=True)
class Control:
    term: int = 0
    vote: str | None = None
    commit_lsn: int = 0
    term_history: tuple[tuple[int, int], ...] = ()  # (term, start LSN), ascending
    membership: Membership = field(default_factory=Membership)
    removed_gtids: tuple[str, ...] = ()  # newest GTID per domain among removed segments
    rebuilding: bool = False  # started on an empty disk, not yet holding the history


def encode_control(control: Control) -> bytes:
    body = json.dumps(
        {
            "term": control.term,
            "vote": control.vote,
            "commit_lsn": control.commit_lsn,
            "term_history": [list(pair) for pair in control.term_history],
            "removed_gtids": list(control.removed_gtids),
            "rebuilding": control.rebuilding,
            "membership": control.membership.as_dict(),
        },
        sort_keys=True,
    ).encode()
    return _HEAD.pack(_MAGIC, crc32c(body), len(body)) + body


def decode_control(data: bytes, path: Path) -> Control:
    if len(data) < _HEAD.size:
        raise CorruptionError(path, len(data), "control file shorter than its header")
    magic, crc, length = _HEAD.unpack_from(data)
    if magic != _MAGIC:
        raise CorruptionError(path, 0, "bad magic: not a binkeeper control file")
    body = data[_HEAD.size :]
    if len(body) != length:
        raise CorruptionError(path, 12, f"body is {len(body)} bytes, header says {length}")
    if crc32c(body) != crc:
        raise CorruptionError(path, _HEAD.size, "CRC32C mismatch")
    try:
        raw = json.loads(body)
        membership = raw["membership"]
        return Control(
            term=int(raw["term"]),
            vote=raw["vote"],
            commit_lsn=int(raw["commit_lsn"]),
            term_history=tuple((int(t), int(s)) for t, s in raw["term_history"]),
            removed_gtids=tuple(str(g) for g in raw.get("removed_gtids", ())),
            rebuilding=bool(raw.get("rebuilding", False)),
            membership=Membership.from_dict(membership),
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CorruptionError(path, _HEAD.size, f"unreadable body: {exc}") from exc


def read_control(fs: FileSystem, directory: Path) -> Control | None:
    path = directory / CONTROL_NAME
    try:
        data = fs.read_file(path)
    except FileNotFoundError:
        return None
    return decode_control(data, path)


def write_control(fs: FileSystem, directory: Path, control: Control) -> None:
    fs.replace_file(directory / CONTROL_NAME, encode_control(control))
