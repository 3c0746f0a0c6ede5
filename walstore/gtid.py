"""MariaDB GTIDs, the one definition: `domain-server-seq`, and comma-separated positions.

The WAL indexes transactions by GTID (each GTID maps to its transaction's end LSN, and the
newest GTID per replication domain is a timeline's GTID position), so the type lives with
the index; the binlog code builds GTIDs from events and the replication port parses the
positions replicas send.
"""

from __future__ import annotations

from typing import NamedTuple


class GtidError(ValueError):
    """Text that is not a GTID or a GTID position; the message quotes it."""


class Gtid(NamedTuple):
    domain: int
    server_id: int
    seq_no: int

    @classmethod
    def parse(cls, text: str) -> Gtid:
        pieces = text.strip().split("-")
        if len(pieces) != 3 or not all(p.isdigit() for p in pieces):
            raise GtidError(f"malformed GTID {text!r} (expected domain-server-seq)")
        return cls(int(pieces[0]), int(pieces[1]), int(pieces[2]))

    def __str__(self) -> str:
        return f"{self.domain}-{self.server_id}-{self.seq_no}"


def domain_of(gtid: str) -> int:
    """The replication domain of GTID text (fast path for the WAL's per-record index)."""
    return int(gtid.split("-", 1)[0])


def parse_position(text: str) -> dict[int, Gtid]:
    """A GTID position, '0-1-100,1-2-7' -> {domain: Gtid}; at most one GTID per domain."""
    position: dict[int, Gtid] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        gtid = Gtid.parse(item)
        if gtid.domain in position:
            raise GtidError(f"two GTIDs for domain {gtid.domain} in {text!r}")
        position[gtid.domain] = gtid
    return position


def format_position(gtids: dict[int, str] | dict[int, Gtid]) -> str:
    """{domain: GTID} -> '0-1-100,1-2-7' (sorted), '' for none."""
    return ",".join(sorted(str(g) for g in gtids.values()))


def covers(position: dict[int, Gtid], other: dict[int, Gtid]) -> bool:
    """POSITION holds everything OTHER does: in each of OTHER's domains, at least as far
    (sequence numbers grow within a domain under gtid_strict_mode)."""
    return all(domain in position and position[domain].seq_no >= gtid.seq_no
               for domain, gtid in other.items())
