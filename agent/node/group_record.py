"""GROUP records: the failover controller's decisions, in the replicated log.

Which server is the primary is decided by the leader and recorded like any other entry:
every agent applies the same newest committed decision, and a deposed leader's decision
never commits (docs/failover.md). JSON, small, versioned by its fields.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from agent.config import Address, check_node_id

# "aborted": a switchover that could not drain the old primary in time; it stays primary.
REASONS = ("adopted", "failover", "switchover", "restarted", "aborted")


class GroupRecordError(ValueError):
    """A GROUP payload that is not a valid decision; the message says what is wrong."""


@dataclass(frozen=True)
class PrimaryServer:
    node: str  # the agent beside it
    host: str
    port: int
    server_id: int

    @property
    def address(self) -> Address:
        return Address(self.host, self.port)


@dataclass(frozen=True)
class GroupRecord:
    epoch: int  # 1 for the first decision, then one more each time
    primary: PrimaryServer
    reason: str
    committed_gtid: str  # the quorum's GTID position when decided: the primary has it all
    term: int  # the leader's term that decided
    # False: chosen, being promoted (not yet for clients: a privileged user could write to
    # it while it is still a replica, unacknowledged). True: writable, waiting for the
    # agents' ACKs — a second record of the same epoch says so.
    ready: bool = True
    # A switchover in progress: the primary stays (its waiting commits still get their
    # ACKs) but is kept read-only until its history is committed, then the node named here
    # is recorded as the primary. None otherwise.
    handover_to: str | None = None

    @property
    def for_clients(self) -> bool:
        """Clients may write to it: ready, and not being handed over."""
        return self.ready and self.handover_to is None

    def encode(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def decode(cls, payload: bytes) -> GroupRecord:
        try:
            raw = json.loads(payload)
            primary = raw["primary"]
            record = cls(
                epoch=_int(raw["epoch"], "epoch"),
                primary=PrimaryServer(
                    node=check_node_id(primary["node"], "primary.node"),
                    host=_str(primary["host"], "primary.host"),
                    port=_int(primary["port"], "primary.port"),
                    server_id=_int(primary["server_id"], "primary.server_id")),
                reason=_str(raw["reason"], "reason"),
                committed_gtid=_str(raw["committed_gtid"], "committed_gtid"),
                term=_int(raw["term"], "term"),
                ready=_bool(raw["ready"], "ready"),
                handover_to=(None if raw.get("handover_to") is None
                             else check_node_id(raw["handover_to"], "handover_to")))
        except (ValueError, KeyError, TypeError) as exc:
            raise GroupRecordError(f"not a GROUP record: {exc}") from exc
        if record.reason not in REASONS:
            raise GroupRecordError(f"reason {record.reason!r} is not one of {REASONS}")
        if record.epoch < 1 or not 1 <= record.primary.port <= 65535:
            raise GroupRecordError("epoch or port out of range")
        return record

    def as_status(self) -> dict[str, Any]:
        return {"node": self.primary.node, "host": self.primary.host,
                "port": self.primary.port}


def _int(value: object, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**63:
        raise TypeError(f"{name} must be a non-negative integer")
    return value


def _bool(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be true or false")
    return value


def _str(value: object, name: str) -> str:
    if not isinstance(value, str) or len(value) > 1024:
        raise TypeError(f"{name} must be a string")
    return value
