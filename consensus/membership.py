"""Who takes part in a timeline: voters, learners and where each listens (one definition,
stored in CONFIG entries and in the WAL's control file)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


class MembershipError(ValueError):
    """A requested change that does not apply to the current membership."""


@dataclass(frozen=True)
class Membership:
    generation: int = 0
    voters: frozenset[str] = frozenset()
    learners: frozenset[str] = frozenset()
    # Where members listen, as opaque strings: carried so every agent learns a new member's
    # address from the log itself. The core never interprets them.
    addresses: tuple[tuple[str, str], ...] = ()

    @property
    def members(self) -> frozenset[str]:
        return self.voters | self.learners

    # ---- one-member changes (the core checks they are allowed now) ----------------------

    def with_learner(self, member: str, address: str) -> Membership:
        if member in self.members:
            raise MembershipError(f"{member} is already a member")
        addresses = dict(self.addresses) | {member: address}
        return Membership(self.generation, self.voters, self.learners | {member},
                          tuple(sorted(addresses.items())))

    def promoted(self, member: str) -> Membership:
        if member not in self.learners:
            raise MembershipError(f"{member} is not a learner")
        return Membership(self.generation, self.voters | {member}, self.learners - {member},
                          self.addresses)

    def without(self, member: str) -> Membership:
        if member not in self.members:
            raise MembershipError(f"{member} is not a member")
        addresses = {k: v for k, v in self.addresses if k != member}
        return Membership(self.generation, self.voters - {member}, self.learners - {member},
                          tuple(sorted(addresses.items())))

    # ---- as stored: CONFIG payloads and the control file -----------------------------------

    def as_dict(self) -> dict[str, Any]:
        return {
            "generation": self.generation,
            "voters": sorted(self.voters),
            "learners": sorted(self.learners),
            "addresses": dict(self.addresses),
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Membership:
        """Raises KeyError, TypeError or ValueError on a malformed dict."""
        addresses = raw.get("addresses", {})
        if not isinstance(addresses, dict):
            raise TypeError("addresses must be an object")
        return cls(
            int(raw["generation"]),
            frozenset(str(v) for v in raw["voters"]),
            frozenset(str(v) for v in raw["learners"]),
            tuple(sorted((str(k), str(v)) for k, v in addresses.items())),
        )

    def encode(self, previous: Membership | None = None) -> bytes:
        """A CONFIG payload; PREVIOUS (the membership it replaces) travels with it, so a node
        that restarts with the entry uncommitted in its log knows what to roll back to."""
        raw = self.as_dict()
        if previous is not None:
            raw["previous"] = previous.as_dict()
        return json.dumps(raw).encode()

    @classmethod
    def previous_of(cls, payload: bytes) -> Membership | None:
        """The membership a CONFIG payload replaced, if it says (older payloads do not)."""
        raw = json.loads(payload).get("previous")
        return cls.from_dict(raw) if isinstance(raw, dict) else None

    @classmethod
    def decode(cls, payload: bytes) -> Membership:
        return cls.from_dict(json.loads(payload))
