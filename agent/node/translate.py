"""Consensus messages <-> protobuf envelopes, field by field by name.

The consensus dataclasses mirror peer.proto, so the translation is mechanical; the one
special field is the entry batch (`entries` in the core, `records` on the wire).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import consensus
import walstore
from agent.config import ConfigError, check_node_id
from agent.node.group_record import GroupRecord, GroupRecordError
from agent.wire import peer_pb2 as pb

# A record's payload on the wire is bounded like one in the WAL: the store refuses more.
MAX_PAYLOAD = walstore.DEFAULT_MAX_RECORD_SIZE

# core message class -> Envelope oneof field, and the field naming the sender
_WIRE_NAME: dict[type, str] = {
    consensus.VoteRequest: "vote_request",
    consensus.VoteResponse: "vote_response",
    consensus.AppendRequest: "append_request",
    consensus.AppendResponse: "append_response",
    consensus.Heartbeat: "heartbeat",
    consensus.HeartbeatResponse: "heartbeat_response",
    consensus.TimeoutNow: "timeout_now",
}
_CORE_CLASS = {name: cls for cls, name in _WIRE_NAME.items()}
SENDER_FIELD: dict[type, str] = {
    consensus.VoteRequest: "candidate_id",
    consensus.VoteResponse: "voter_id",
    consensus.AppendRequest: "leader_id",
    consensus.AppendResponse: "node_id",
    consensus.Heartbeat: "leader_id",
    consensus.HeartbeatResponse: "node_id",
    consensus.TimeoutNow: "leader_id",
}
_FIELDS = {cls: tuple(f.name for f in dataclasses.fields(cls)) for cls in _WIRE_NAME}


class TranslationError(ValueError):
    """A well-formed frame whose content the core cannot accept (e.g. not a consensus message)."""


def record_of(entry: consensus.Entry) -> pb.Record:
    return pb.Record(
        lsn=entry.lsn,
        term=entry.term,
        kind=int(entry.kind),  # type: ignore[arg-type]
        payload=entry.payload,
        gtid=entry.gtid or "",
        continued=entry.continued,
    )


def entry_of(record: pb.Record) -> consensus.Entry:
    try:
        kind = consensus.RecordKind(record.kind)
    except ValueError as exc:
        raise TranslationError(f"unknown record kind {record.kind}") from exc
    return consensus.Entry(
        lsn=record.lsn,
        term=record.term,
        kind=kind,
        payload=record.payload,
        gtid=record.gtid or None,
        continued=record.continued,
    )


def to_envelope(msg: Any) -> pb.Envelope:
    envelope = pb.Envelope()
    body = getattr(envelope, _WIRE_NAME[type(msg)])
    for name in _FIELDS[type(msg)]:
        value = getattr(msg, name)
        if name == "entries":
            body.records.extend(record_of(e) for e in value)
        elif name == "term_history":
            body.term_history.extend(
                pb.TermStart(term=t.term, start_lsn=t.start_lsn) for t in value
            )
        elif value is not None:
            setattr(body, name, value)
    body.SetInParent()  # an all-default message must still select its oneof
    return envelope


def from_envelope(envelope: pb.Envelope) -> Any:
    which = envelope.WhichOneof("body")
    cls = _CORE_CLASS.get(which or "")
    if cls is None:
        raise TranslationError(f"{which or 'an empty envelope'} is not a consensus message")
    body = getattr(envelope, which)
    kwargs: dict[str, Any] = {}
    for name in _FIELDS[cls]:
        if name == "entries":
            kwargs[name] = tuple(entry_of(r) for r in body.records)
        elif name == "term_history":
            kwargs[name] = tuple(
                consensus.TermStart(t.term, t.start_lsn) for t in body.term_history
            )
        else:
            kwargs[name] = getattr(body, name)
    msg = cls(**kwargs)
    check(msg)
    return msg


def check(msg: Any) -> None:
    """Everything the core and the WAL rely on, checked before a peer's message reaches
    them: a well-framed message with impossible content is the peer's fault, and closes
    that connection (TranslationError), never the node loop."""
    try:
        check_node_id(sender_of(msg), "sender")
    except ConfigError as exc:
        raise TranslationError(str(exc)) from exc
    if isinstance(msg, consensus.AppendRequest):
        _check_entries(msg)
    elif isinstance(msg, consensus.AppendResponse):
        previous: consensus.TermStart | None = None
        for start in msg.term_history:
            if previous is not None and (start.term <= previous.term
                                         or start.start_lsn < previous.start_lsn):
                raise TranslationError("term history is not ascending")
            previous = start
        if msg.term_history and msg.term_history[-1].term > msg.term:
            raise TranslationError("term history names a term beyond the message's")


def _check_entries(msg: consensus.AppendRequest) -> None:
    if msg.prev_lsn == 0 and msg.prev_term != 0:
        raise TranslationError("prev_term must be 0 at LSN 0")
    if msg.prev_term > msg.term:
        raise TranslationError(f"prev_term {msg.prev_term} is beyond the term {msg.term}")
    lsn, term = msg.prev_lsn, msg.prev_term
    for entry in msg.entries:
        where = f"record at LSN {entry.lsn}"
        if entry.lsn != lsn:
            raise TranslationError(f"{where} does not follow the one ending at {lsn}")
        if not entry.payload or len(entry.payload) > MAX_PAYLOAD:
            raise TranslationError(f"{where}: payload of {len(entry.payload)} bytes")
        if not term <= entry.term <= msg.term:
            raise TranslationError(f"{where}: term {entry.term} outside {term}..{msg.term}")
        if entry.gtid is not None:
            try:
                entry.gtid.encode("ascii")
                walstore.Gtid.parse(entry.gtid)
            except (UnicodeEncodeError, walstore.GtidError) as exc:
                raise TranslationError(f"{where}: bad GTID {entry.gtid!r}") from exc
        if entry.kind is consensus.RecordKind.CONFIG:
            _check_membership(entry, where)
        elif entry.kind is consensus.RecordKind.GROUP:
            try:
                GroupRecord.decode(entry.payload)
            except GroupRecordError as exc:
                raise TranslationError(f"{where}: {exc}") from exc
        lsn, term = entry.end_lsn, entry.term


def _check_membership(entry: consensus.Entry, where: str) -> None:
    try:
        membership = consensus.Membership.decode(entry.payload)
        consensus.Membership.previous_of(entry.payload)  # read again after a restart
        for member in membership.members:
            check_node_id(member, "member")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise TranslationError(f"{where}: not a membership: {exc}") from exc
    if not membership.voters or membership.voters & membership.learners:
        raise TranslationError(f"{where}: a membership needs voters, none of them learners")


def sender_of(msg: Any) -> str:
    return str(getattr(msg, SENDER_FIELD[type(msg)]))


def message_size(msg: Any) -> int:
    """What a message costs while it waits in a queue: its record payloads, plus a little."""
    return 64 + sum(len(entry.payload) for entry in getattr(msg, "entries", ()))
