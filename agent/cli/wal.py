"""`binkeeper wal verify DIR` and `binkeeper wal dump DIR`: offline, never modify DIR."""

from __future__ import annotations

import argparse
import hashlib
import sys

import walstore


def verify_main(args: argparse.Namespace) -> int:
    report = walstore.verify(args.dir)
    if report.damage is not None:
        damage = report.damage
        print(
            f"DAMAGED: {damage.path.name} at byte offset {damage.offset}: {damage.reason}",
            file=sys.stderr,
        )
        print(f"  ({damage.path}) — the store refuses to open; nothing was changed")
        return 1
    if report.torn_tail is not None:
        path, offset, reason = report.torn_tail
        print(
            f"DAMAGED: {path.name} at byte offset {offset}: {reason} — a torn tail of the last "
            "segment; opening the store would cut it at the last good record",
            file=sys.stderr,
        )
        return 1
    print(
        f"ok: {report.segments} segment(s), {report.records} record(s), "
        f"end LSN {report.end_lsn}, commit LSN {report.commit_lsn}"
    )
    return 0


def dump_main(args: argparse.Namespace) -> int:
    report = walstore.verify(args.dir)
    if report.damage is not None or report.torn_tail is not None:
        print(
            "refusing to dump a damaged WAL; run `binkeeper wal verify` for details",
            file=sys.stderr,
        )
        return 1
    store = walstore.WalStore.open(args.dir, create=False)
    try:
        control = store.control
        print(
            f"# term {control.term} vote {control.vote or '-'} commit_lsn {control.commit_lsn} "
            f"end_lsn {store.end_lsn}"
        )
        print("# lsn end_lsn term kind size gtid" + (" sha256" if args.payload_sha else ""))
        for record in store.read(args.from_lsn):
            fields = [
                str(record.lsn),
                str(record.end_lsn),
                str(record.term),
                record.kind.name,
                str(len(record.payload)),
                (record.gtid or "-") + ("+" if record.continued else ""),
            ]
            if args.payload_sha:
                fields.append(hashlib.sha256(record.payload).hexdigest()[:16])
            print(" ".join(fields))
    except BrokenPipeError:
        return 0
    finally:
        store.close()
    return 0
