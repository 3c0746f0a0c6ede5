"""The verdict on a failover group after a run, Jepsen-style: what the writer was told,
checked against what the servers hold.

- every acknowledged id is on the current primary, none twice, no refused one;
- no errant GTID: every server's gtid_binlog_pos is covered by the agents' committed GTID
  position (and where it names the same sequence number, it names the same transaction's
  server id);
- every server reaches the primary's gtid_binlog_pos and CHECKSUM TABLE is then equal on
  all of them;
- the primary counted no commit that fell back to asynchronous replication.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pymysql

import walstore
from agent.harness.group import FailoverGroup, GroupError
from agent.harness.writer import History


@dataclass
class Verdict:
    acked: int = 0
    unknown: int = 0
    failed: int = 0
    primary: str = ""  # node id of the primary checked
    present: int = 0  # acknowledged ids found on the primary
    missing: list[int] = field(default_factory=list)
    duplicated: int = 0
    refused_present: list[int] = field(default_factory=list)  # failed ids found anyway
    committed_gtid: str = ""
    positions: dict[str, str] = field(default_factory=dict)  # node -> gtid_binlog_pos
    converged: str | None = None  # why not, when the servers did not converge
    errant: dict[str, str] = field(default_factory=dict)  # node -> GTIDs not committed
    checksums: dict[str, tuple[int, ...]] = field(default_factory=dict)  # node -> per table
    fallbacks: int = 0  # Rpl_semi_sync_master_no_tx on the primary

    @property
    def checksums_equal(self) -> bool:
        return len(set(self.checksums.values())) == 1

    @property
    def passed(self) -> bool:
        return (not self.missing and not self.duplicated and not self.refused_present
                and self.converged is None and not self.errant and self.checksums_equal
                and self.fallbacks == 0 and self.acked > 0)

    def lines(self) -> list[str]:
        out = [
            f"The writer was told: {self.acked} commits acknowledged, {self.unknown} unknown "
            f"(connection lost mid-commit), {self.failed} refused.",
            f"On the primary (beside {self.primary}): {self.present} of the acknowledged ids "
            f"present, missing: {len(self.missing)}, twice: {self.duplicated}, refused but "
            f"present: {len(self.refused_present)}.",
        ]
        if self.missing:
            out.append(f"  missing ids (first 10): {self.missing[:10]}")
        out.append(f"Agents' committed GTID position: {self.committed_gtid or '-'}; servers: "
                   + ", ".join(f"{n} {p}" for n, p in self.positions.items()))
        out.append("Errant GTIDs: " + ("none" if not self.errant else "; ".join(
            f"{n}: {g}" for n, g in self.errant.items())))
        if self.converged is not None:
            out.append(f"Not converged: {self.converged}")
        out.append(("CHECKSUM TABLE equal on all " if self.checksums_equal
                    else "CHECKSUM TABLE differs between the ")
                   + f"{len(self.checksums)} servers"
                   + ("" if self.checksums_equal else ": " + ", ".join(
                       f"{n} {c}" for n, c in self.checksums.items())) + ".")
        out.append(f"Commits the primary let fall back to asynchronous: {self.fallbacks}.")
        return out


def errant_gtids(held: str, committed: str) -> str:
    """The GTIDs of position HELD that the committed position COMMITTED does not cover
    (beyond it, or at its sequence number under another server id), as text; '' if none."""
    have = walstore.parse_position(held)
    quorum = walstore.parse_position(committed)
    out = []
    for domain, gtid in sorted(have.items()):
        mine = quorum.get(domain)
        if (mine is None or gtid.seq_no > mine.seq_no
                or (gtid.seq_no == mine.seq_no and gtid.server_id != mine.server_id)):
            out.append(str(gtid))
    return ", ".join(out)


def judge(group: FailoverGroup, histories: Sequence[History], ledger: str,
          tables: Sequence[str], timeout: float = 60.0) -> Verdict:
    """Check HISTORIES (one per client, ids unique across them) against GROUP once every
    client has stopped. LEDGER: the table of unique ids; TABLES: those whose CHECKSUM TABLE
    must be equal on every server."""
    acked: set[int] = set()
    refused: set[int] = set()
    unknown = 0
    for history in histories:
        with history.lock:
            acked |= history.acked.keys()
            refused |= history.failed
            unknown += len(history.unknown)
    verdict = Verdict(acked=len(acked), unknown=unknown, failed=len(refused))
    try:
        group.wait_converged(timeout)
    except GroupError as exc:
        verdict.converged = str(exc).splitlines()[0]
    primary = group.primary_member()
    if primary is None:
        verdict.converged = "no ready primary"
        return verdict
    verdict.primary = primary.node_id
    rows = primary.server.query(f"SELECT id, COUNT(*) FROM {ledger} GROUP BY id")
    counts = {int(row[0]): int(row[1]) for row in rows}
    verdict.present = len(acked & counts.keys())
    verdict.missing = sorted(acked - counts.keys())
    verdict.duplicated = sum(1 for count in counts.values() if count > 1)
    verdict.refused_present = sorted(refused & counts.keys())
    verdict.committed_gtid = group.committed_gtid()
    for node, member in group.members.items():
        try:
            held = member.server.variable("gtid_binlog_pos")
            sums = tuple(int(member.server.query(f"CHECKSUM TABLE {table}")[0][1] or 0)
                         for table in tables)
        except pymysql.err.MySQLError as exc:
            verdict.positions[node] = f"unreachable ({exc.args[0] if exc.args else exc})"
            verdict.converged = verdict.converged or f"{node}'s server does not answer"
            continue
        verdict.positions[node] = held or "-"
        verdict.checksums[node] = sums
        errant = errant_gtids(held, verdict.committed_gtid)
        if errant:
            verdict.errant[node] = errant
    verdict.fallbacks = int(primary.server.query(
        "SHOW GLOBAL STATUS LIKE 'Rpl_semi_sync_master_no_tx'")[0][1])
    return verdict
