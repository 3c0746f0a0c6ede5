"""`binkeeper wal verify DIR` and `binkeeper wal dump DIR`: offline, never modify DIR.

DIR is an agent's data_dir (every timeline in it) or one timeline's WAL directory. Exit 0
only when DIR holds a WAL and all of it is sound; 1 with the file and byte offset of any
damage (segments and control files alike); 2 when DIR holds no WAL at all.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import walstore
from agent.layout import wal_dirs

NO_WAL = 2


def _find(command: str, directory: str) -> list[Path]:
    found = wal_dirs(Path(directory))
    if not found:
        print(f"binkeeper wal {command}: {directory} holds no WAL: neither a timeline's WAL "
              "directory (a control file, segments) nor an agent's data_dir with timelines/",
              file=sys.stderr)
    return found


def _verify_one(path: Path) -> bool:
    report = walstore.verify(path)
    if report.damage is not None:
        damage = report.damage
        print(
            f"DAMAGED: {damage.path.name} at byte offset {damage.offset}: {damage.reason}",
            file=sys.stderr,
        )
        print(f"  ({damage.path}) — the store refuses to open; nothing was changed")
        return False
    if report.torn_tail is not None:
        tail_path, offset, reason = report.torn_tail
        print(
            f"DAMAGED: {tail_path.name} at byte offset {offset}: {reason} — a torn tail of the "
            f"last segment; opening the store would cut it at the last good record "
            f"({tail_path})",
            file=sys.stderr,
        )
        return False
    print(
        f"ok: {path}: {report.segments} segment(s), {report.records} record(s), "
        f"end LSN {report.end_lsn}, commit LSN {report.commit_lsn}"
    )
    return True


def verify_main(args: argparse.Namespace) -> int:
    found = _find("verify", args.dir)
    if not found:
        return NO_WAL
    sound = [_verify_one(path) for path in found]
    return 0 if all(sound) else 1


def _dump_one(path: Path, from_lsn: int, payload_sha: bool) -> None:
    store = walstore.WalStore.open(path, create=False)
    try:
        control = store.control
        print(
            f"# {path}: term {control.term} vote {control.vote or '-'} "
            f"commit_lsn {control.commit_lsn} end_lsn {store.end_lsn}"
        )
        print("# lsn end_lsn term kind size gtid" + (" sha256" if payload_sha else ""))
        for record in store.read(max(from_lsn, store.first_lsn)):
            fields = [
                str(record.lsn),
                str(record.end_lsn),
                str(record.term),
                record.kind.name,
                str(len(record.payload)),
                (record.gtid or "-") + ("+" if record.continued else ""),
            ]
            if payload_sha:
                fields.append(hashlib.sha256(record.payload).hexdigest()[:16])
            print(" ".join(fields))
    finally:
        store.close()


def dump_main(args: argparse.Namespace) -> int:
    found = _find("dump", args.dir)
    if not found:
        return NO_WAL
    for path in found:
        report = walstore.verify(path)
        if not report.sound:
            print(f"{path}: refusing to dump a damaged WAL; run `binkeeper wal verify` for "
                  "details", file=sys.stderr)
            return 1
    try:
        for path in found:
            _dump_one(path, args.from_lsn, args.payload_sha)
    except BrokenPipeError:
        return 0
    return 0
