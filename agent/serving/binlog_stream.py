"""The events a replica is sent: committed history only, in the primary's own coordinates.

Every event goes out exactly as the primary wrote it — same binlog file names, same
positions (`next_pos`), same CRC — because the stored BINLOG_META records (ROTATE,
FORMAT_DESCRIPTION, ...) carry the primary's file structure. So a replica's
`Master_Log_File`/`Read_Master_Log_Pos` mean the same thing on every agent and on the
primary, and a replica can move between agents without any translation. Only the events
a dump always starts with are made here (as MariaDB does): an artificial ROTATE naming
the file, the file's FORMAT_DESCRIPTION with its position cleared, and heartbeats.

Reads are bounded per call and never pass the commit LSN; a transaction stored in pieces
is sent only once its last piece is committed.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import consensus
import walstore
from agent.binlog.events import (
    FORMAT_DESCRIPTION,
    GTID_LIST,
    GTID_LIST_UNTIL_REACHED,
    HEARTBEAT,
    LOG_EVENT_BINLOG_IN_USE_F,
    ROTATE,
    BinlogEventError,
    Event,
    gtid_list_of,
    make_event,
    next_pos_of,
    restamped,
    rotate_target,
    split_events,
    without_in_use,
)
from agent.binlog.meta import BinlogMeta
from agent.binlog.positions import BinlogPosition
from agent.binlog.transactions import TransactionAssembler

ER_MASTER_FATAL_ERROR_READING_BINLOG = 1236


class DumpError(Exception):
    """The dump cannot start or continue; sent to the replica as ERR 1236."""


def parse_gtid_state(text: str) -> dict[int, walstore.Gtid]:
    """A replica's GTID position, '0-1-100,1-2-7' -> {domain: GTID}."""
    try:
        return walstore.parse_position(text)
    except walstore.GtidError as exc:
        raise DumpError(f"{exc}, in the replica's position") from exc


def fde_for_dump(raw: bytes) -> bytes:
    """A stored FORMAT_DESCRIPTION as sent at the start of a dump: position 0, so the replica
    does not take it for a place in the file; "in use" cleared; CRC recomputed."""
    return restamped(raw, next_pos=0, clear_flags=LOG_EVENT_BINLOG_IN_USE_F)


@dataclass
class StartPoint:
    lsn: int  # where reading starts
    file_name: str
    fde: bytes  # the stored FORMAT_DESCRIPTION event of that file
    fde_lsn: int


class BinlogStream:
    """Committed events for one replica, from its GTID position (or file and position)."""

    def __init__(self, store: walstore.WalStore, server_id: int,
                 rotate_checksum: bool = True) -> None:
        self.store = store
        self.server_id = server_id
        # The first, artificial ROTATE carries a CRC only if the client asked for checksums
        # (@master_binlog_checksum); it comes before any FORMAT_DESCRIPTION could say so.
        self.rotate_checksum = rotate_checksum
        self.lsn = 0  # next record to read
        self.file_name = ""
        self.position = 4  # end of the last event sent, in file_name
        self.events_sent = 0
        self.bytes_sent = 0
        self.last_gtid: str | None = None
        # domain -> end LSN of the replica's GTID: its transactions up to there are held
        self._skip_upto: dict[int, int] = {}
        self._skip_before: BinlogPosition | None = None  # file/position mode
        self._until: dict[int, walstore.Gtid] | None = None
        self._position_gtids: dict[int, walstore.Gtid] = {}  # per domain: newest sent or held
        self._assembler = TransactionAssembler()

    # ---- where to start -------------------------------------------------------------------

    def start_by_gtid(self, state_text: str, commit_lsn: int) -> list[bytes]:
        """Start where MariaDB would for @slave_connect_state STATE_TEXT (sql_repl.cc,
        gtid_find_binlog_file): no later than the first transaction any domain still needs —
        after the replica's GTID in each domain it names, from the domain's first transaction
        in each it does not — then skip, per domain, what the replica holds."""
        state = parse_gtid_state(state_text)
        self._skip_upto = {domain: self._held_end(str(gtid), commit_lsn)
                           for domain, gtid in sorted(state.items())}
        self._position_gtids = dict(state)
        starts = list(self._skip_upto.values())
        unnamed = set(self.store.gtids_at(commit_lsn)) - set(state)
        if unnamed:
            starts.append(self._domains_start(unnamed, commit_lsn))
        return self._begin(min(starts, default=self.store.first_lsn))

    def _held_end(self, gtid: str, commit_lsn: int) -> int:
        """The end LSN of the replica's GTID, which must be committed here (ERR 1236 if not)."""
        end = self.store.gtid_end_lsn(gtid)
        if end is None:
            raise DumpError(
                f"the replica's position {gtid} is not in this agent's history "
                f"(newest committed here: {self._committed_text(commit_lsn)}); it may hold "
                "transactions the quorum never committed, or come from another timeline")
        if end > commit_lsn:
            raise DumpError(
                f"the replica's position {gtid} is beyond the committed history "
                f"(commit LSN {commit_lsn}); wait for the quorum and retry")
        return end

    def _domains_start(self, domains: set[int], commit_lsn: int) -> int:
        """Where DOMAINS (which the replica's position does not name, so it needs them whole)
        begin: the start of the newest file whose GTID_LIST names none of them — MariaDB's
        search back for a file whose GTID_LIST "contains all slave GTIDs". ERR 1236, as a
        primary whose binlogs holding them were purged, when this history begins after."""
        removed = {walstore.Gtid.parse(g).domain for g in self.store.control.removed_gtids}
        lists = self._gtid_lists(commit_lsn)
        if not lists and not removed & domains:
            return self.store.first_lsn  # no primary's GTID_LIST stored: the whole log
        for file_start, before in reversed(lists):
            if not before & domains:
                return file_start
        missing = sorted(domains & removed) or sorted(domains & lists[0][1])
        raise DumpError(
            f"the replica's position names no GTID of domain {missing[0]}, so it needs that "
            "domain from its first transaction, which this agent's history does not hold (the "
            "binlog holding it was purged before the agents' history began); start the "
            f"replica from a position that names domain {missing[0]}")

    def _gtid_lists(self, commit_lsn: int) -> list[tuple[int, set[int]]]:
        """(where its file starts, the domains with GTIDs before that file) of each stored,
        committed GTID_LIST of the primary, in order."""
        result: list[tuple[int, set[int]]] = []
        file_start: int | None = None
        for lsn in self.store.binlog_meta_lsns():
            if lsn >= commit_lsn:
                break
            meta = self._meta_at(lsn)
            if meta is None:
                continue
            if meta.event.type_code == FORMAT_DESCRIPTION:
                file_start = lsn
            elif meta.event.type_code == GTID_LIST:
                try:
                    before = {gtid.domain for gtid in gtid_list_of(meta.event)}
                except BinlogEventError as exc:
                    raise DumpError(f"stored GTID_LIST at LSN {lsn} is unreadable: {exc}") from exc
                result.append((lsn if file_start is None else file_start, before))
        return result

    def start_by_position(self, file_name: str, position: int) -> list[bytes]:
        """Start at FILE_NAME:POSITION of the primary's binlog (4: the file's beginning)."""
        for lsn in self.store.binlog_meta_lsns():
            meta = self._meta_at(lsn)
            if meta is not None and meta.file_name == file_name:
                self._skip_before = BinlogPosition.of(file_name, max(position, 4))
                return self._begin(lsn)
        raise DumpError(f"binlog file {file_name!r} is not in this agent's history")

    def set_until(self, until_text: str | None) -> list[bytes]:
        """START SLAVE UNTIL master_gtid_pos: stop after these GTIDs. Returns the events that
        end the dump at once when the replica is already there."""
        self._until = parse_gtid_state(until_text) if until_text else None
        if self._until is None:
            return []
        for domain, until in list(self._until.items()):
            held = self._position_gtids.get(domain)
            if held is not None and held.seq_no >= until.seq_no:
                del self._until[domain]
        return [self.until_reached_event()] if not self._until else []

    def until_reached_event(self) -> bytes:
        """The artificial GTID_LIST that tells the replica its UNTIL position is reached:
        its I/O thread stops on it, its SQL thread after applying everything before it."""
        gtids = sorted(self._position_gtids.items())
        body = struct.pack("<I", len(gtids) | GTID_LIST_UNTIL_REACHED) + b"".join(
            struct.pack("<IIQ", g.domain, g.server_id, g.seq_no) for _domain, g in gtids)
        return make_event(GTID_LIST, self.server_id, body, log_pos=self.position)

    def _begin(self, lsn: int) -> list[bytes]:
        point = self._context_at(lsn)
        self.lsn = point.lsn
        self.file_name = point.file_name
        rotate = make_event(ROTATE, self.server_id,
                            struct.pack("<Q", 4) + point.file_name.encode(),
                            checksum=self.rotate_checksum)
        if point.fde_lsn == point.lsn:
            return [rotate]  # the file's own FORMAT_DESCRIPTION comes next, as stored
        return [rotate, fde_for_dump(point.fde)]

    def _context_at(self, lsn: int) -> StartPoint:
        """The file and FORMAT_DESCRIPTION in force at LSN: the newest stored FDE at or
        before it; at the very start of a log, the first FDE (nothing before it is served)."""
        metas = self.store.binlog_meta_lsns()
        for meta_lsn in reversed(metas):
            if meta_lsn > lsn:
                continue
            meta = self._meta_at(meta_lsn)
            if meta is not None and meta.event.type_code == FORMAT_DESCRIPTION:
                start = meta_lsn if meta_lsn == lsn else lsn
                return StartPoint(start, meta.file_name, meta.event.raw, meta_lsn)
        for meta_lsn in metas:
            meta = self._meta_at(meta_lsn)
            if meta is not None and meta.event.type_code == FORMAT_DESCRIPTION:
                if self._data_between(lsn, meta_lsn):
                    break
                return StartPoint(meta_lsn, meta.file_name, meta.event.raw, meta_lsn)
        raise DumpError("no FORMAT_DESCRIPTION event is stored before the start position; "
                        "this history cannot be served")

    def _data_between(self, start: int, end: int) -> bool:
        for record in self.store.read(start):
            if record.lsn >= end:
                return False
            if record.kind is consensus.RecordKind.DATA:
                return True
        return False

    def _meta_at(self, lsn: int) -> BinlogMeta | None:
        record = next(self.store.read(lsn), None)
        if record is None or record.kind is not consensus.RecordKind.BINLOG_META:
            return None
        return BinlogMeta.decode(record.payload)

    def _committed_text(self, commit_lsn: int) -> str:
        return walstore.format_position(self.store.gtids_at(commit_lsn)) or "nothing"

    # ---- the events -----------------------------------------------------------------------

    def read(self, commit_lsn: int, max_bytes: int) -> tuple[list[bytes | memoryview], bool]:
        """Events from the committed records after the last read, about MAX_BYTES of them.
        Returns (events, reached_until)."""
        out: list[bytes | memoryview] = []
        if self.lsn >= commit_lsn:
            return out, False
        size = 0
        # Bounded by the commit LSN inside the store too: this runs in a worker thread, and
        # must not read a byte a truncation on the event loop may cut meanwhile.
        for record in self.store.read(self.lsn, max_bytes=max_bytes, until_lsn=commit_lsn):
            self.lsn = record.end_lsn
            if record.kind is consensus.RecordKind.BINLOG_META:
                self._assembler.feed(record)
                meta = BinlogMeta.decode(record.payload)
                self._note(meta.file_name, meta.event)
                if self._skipped(meta.file_name, meta.event.next_pos):
                    continue
                out.append(without_in_use(meta.event.raw))
                size += len(meta.event.raw)
                if meta.event.type_code == ROTATE:
                    # Like the server, each new file starts with an artificial ROTATE naming
                    # it (a reader of one file, e.g. mariadb-binlog, stops there).
                    out.append(make_event(ROTATE, self.server_id,
                                          struct.pack("<Q", 4) + self.file_name.encode()))
                continue
            transaction = self._assembler.feed(record)
            if transaction is None:
                continue
            gtid, data = transaction
            parsed = walstore.Gtid.parse(gtid)
            domain = parsed.domain
            if record.end_lsn <= self._skip_upto.get(domain, -1):
                continue  # the replica holds it: at or before its GTID in this domain
            self._position_gtids[domain] = parsed
            try:
                events = split_events(data)
            except BinlogEventError as exc:
                raise DumpError(f"stored transaction {gtid} is unreadable: {exc}") from exc
            last_next_pos = next_pos_of(events[-1])
            if self._skipped(self.file_name, last_next_pos):
                continue
            out.extend(events)
            size += len(data)
            self.position = last_next_pos or self.position
            self.last_gtid = gtid
            if self._reached_until(parsed):
                out.append(self.until_reached_event())
                break
        self.events_sent += len(out)
        self.bytes_sent += size
        return out, self.until_done

    def _skipped(self, file_name: str, next_pos: int) -> bool:
        if self._skip_before is None:
            return False
        if BinlogPosition.of(file_name, next_pos) <= self._skip_before:
            return True
        self._skip_before = None  # reached: everything after is sent
        return False

    @property
    def until_done(self) -> bool:
        return self._until == {}

    def _reached_until(self, gtid: walstore.Gtid) -> bool:
        if self._until is None or gtid.domain not in self._until:
            return False
        if gtid.seq_no >= self._until[gtid.domain].seq_no:
            del self._until[gtid.domain]
        return not self._until

    def _note(self, file_name: str, event: Event) -> None:
        if event.type_code == ROTATE:
            self.file_name = rotate_target(event.raw)
            self.position = 4
        else:
            self.file_name = file_name
            self.position = event.next_pos or self.position

    def heartbeat(self) -> bytes:
        """Sent when idle: where the replica is, in the primary's coordinates."""
        return make_event(HEARTBEAT, self.server_id, self.file_name.encode(),
                          log_pos=self.position)
