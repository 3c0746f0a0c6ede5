from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RecordKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RECORD_KIND_DATA: _ClassVar[RecordKind]
    RECORD_KIND_TERM_START: _ClassVar[RecordKind]
    RECORD_KIND_CONFIG: _ClassVar[RecordKind]
    RECORD_KIND_BINLOG_META: _ClassVar[RecordKind]
    RECORD_KIND_GROUP: _ClassVar[RecordKind]
RECORD_KIND_DATA: RecordKind
RECORD_KIND_TERM_START: RecordKind
RECORD_KIND_CONFIG: RecordKind
RECORD_KIND_BINLOG_META: RecordKind
RECORD_KIND_GROUP: RecordKind

class Hello(_message.Message):
    __slots__ = ("protocol_version", "cluster_id", "timeline_id", "node_id", "server_host", "server_port")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    TIMELINE_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    SERVER_HOST_FIELD_NUMBER: _ClassVar[int]
    SERVER_PORT_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    cluster_id: str
    timeline_id: str
    node_id: str
    server_host: str
    server_port: int
    def __init__(self, protocol_version: _Optional[int] = ..., cluster_id: _Optional[str] = ..., timeline_id: _Optional[str] = ..., node_id: _Optional[str] = ..., server_host: _Optional[str] = ..., server_port: _Optional[int] = ...) -> None: ...

class HelloReply(_message.Message):
    __slots__ = ("protocol_version", "node_id", "accepted", "reason")
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    protocol_version: int
    node_id: str
    accepted: bool
    reason: str
    def __init__(self, protocol_version: _Optional[int] = ..., node_id: _Optional[str] = ..., accepted: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...

class Record(_message.Message):
    __slots__ = ("lsn", "term", "kind", "payload", "gtid", "continued")
    LSN_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    GTID_FIELD_NUMBER: _ClassVar[int]
    CONTINUED_FIELD_NUMBER: _ClassVar[int]
    lsn: int
    term: int
    kind: RecordKind
    payload: bytes
    gtid: str
    continued: bool
    def __init__(self, lsn: _Optional[int] = ..., term: _Optional[int] = ..., kind: _Optional[_Union[RecordKind, str]] = ..., payload: _Optional[bytes] = ..., gtid: _Optional[str] = ..., continued: _Optional[bool] = ...) -> None: ...

class VoteRequest(_message.Message):
    __slots__ = ("term", "candidate_id", "last_log_term", "last_lsn", "pre_vote", "leadership_transfer")
    TERM_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_ID_FIELD_NUMBER: _ClassVar[int]
    LAST_LOG_TERM_FIELD_NUMBER: _ClassVar[int]
    LAST_LSN_FIELD_NUMBER: _ClassVar[int]
    PRE_VOTE_FIELD_NUMBER: _ClassVar[int]
    LEADERSHIP_TRANSFER_FIELD_NUMBER: _ClassVar[int]
    term: int
    candidate_id: str
    last_log_term: int
    last_lsn: int
    pre_vote: bool
    leadership_transfer: bool
    def __init__(self, term: _Optional[int] = ..., candidate_id: _Optional[str] = ..., last_log_term: _Optional[int] = ..., last_lsn: _Optional[int] = ..., pre_vote: _Optional[bool] = ..., leadership_transfer: _Optional[bool] = ...) -> None: ...

class VoteResponse(_message.Message):
    __slots__ = ("term", "voter_id", "granted", "pre_vote")
    TERM_FIELD_NUMBER: _ClassVar[int]
    VOTER_ID_FIELD_NUMBER: _ClassVar[int]
    GRANTED_FIELD_NUMBER: _ClassVar[int]
    PRE_VOTE_FIELD_NUMBER: _ClassVar[int]
    term: int
    voter_id: str
    granted: bool
    pre_vote: bool
    def __init__(self, term: _Optional[int] = ..., voter_id: _Optional[str] = ..., granted: _Optional[bool] = ..., pre_vote: _Optional[bool] = ...) -> None: ...

class AppendRequest(_message.Message):
    __slots__ = ("term", "leader_id", "prev_lsn", "prev_term", "commit_lsn", "records", "rebuild_to")
    TERM_FIELD_NUMBER: _ClassVar[int]
    LEADER_ID_FIELD_NUMBER: _ClassVar[int]
    PREV_LSN_FIELD_NUMBER: _ClassVar[int]
    PREV_TERM_FIELD_NUMBER: _ClassVar[int]
    COMMIT_LSN_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    REBUILD_TO_FIELD_NUMBER: _ClassVar[int]
    term: int
    leader_id: str
    prev_lsn: int
    prev_term: int
    commit_lsn: int
    records: _containers.RepeatedCompositeFieldContainer[Record]
    rebuild_to: int
    def __init__(self, term: _Optional[int] = ..., leader_id: _Optional[str] = ..., prev_lsn: _Optional[int] = ..., prev_term: _Optional[int] = ..., commit_lsn: _Optional[int] = ..., records: _Optional[_Iterable[_Union[Record, _Mapping]]] = ..., rebuild_to: _Optional[int] = ...) -> None: ...

class TermStart(_message.Message):
    __slots__ = ("term", "start_lsn")
    TERM_FIELD_NUMBER: _ClassVar[int]
    START_LSN_FIELD_NUMBER: _ClassVar[int]
    term: int
    start_lsn: int
    def __init__(self, term: _Optional[int] = ..., start_lsn: _Optional[int] = ...) -> None: ...

class AppendResponse(_message.Message):
    __slots__ = ("term", "node_id", "success", "flush_lsn", "hint_lsn", "hint_term", "last_lsn", "term_history", "rebuilding")
    TERM_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    FLUSH_LSN_FIELD_NUMBER: _ClassVar[int]
    HINT_LSN_FIELD_NUMBER: _ClassVar[int]
    HINT_TERM_FIELD_NUMBER: _ClassVar[int]
    LAST_LSN_FIELD_NUMBER: _ClassVar[int]
    TERM_HISTORY_FIELD_NUMBER: _ClassVar[int]
    REBUILDING_FIELD_NUMBER: _ClassVar[int]
    term: int
    node_id: str
    success: bool
    flush_lsn: int
    hint_lsn: int
    hint_term: int
    last_lsn: int
    term_history: _containers.RepeatedCompositeFieldContainer[TermStart]
    rebuilding: bool
    def __init__(self, term: _Optional[int] = ..., node_id: _Optional[str] = ..., success: _Optional[bool] = ..., flush_lsn: _Optional[int] = ..., hint_lsn: _Optional[int] = ..., hint_term: _Optional[int] = ..., last_lsn: _Optional[int] = ..., term_history: _Optional[_Iterable[_Union[TermStart, _Mapping]]] = ..., rebuilding: _Optional[bool] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("term", "leader_id", "commit_lsn", "commit_only", "rebuild_to")
    TERM_FIELD_NUMBER: _ClassVar[int]
    LEADER_ID_FIELD_NUMBER: _ClassVar[int]
    COMMIT_LSN_FIELD_NUMBER: _ClassVar[int]
    COMMIT_ONLY_FIELD_NUMBER: _ClassVar[int]
    REBUILD_TO_FIELD_NUMBER: _ClassVar[int]
    term: int
    leader_id: str
    commit_lsn: int
    commit_only: bool
    rebuild_to: int
    def __init__(self, term: _Optional[int] = ..., leader_id: _Optional[str] = ..., commit_lsn: _Optional[int] = ..., commit_only: _Optional[bool] = ..., rebuild_to: _Optional[int] = ...) -> None: ...

class HeartbeatResponse(_message.Message):
    __slots__ = ("term", "node_id", "flush_lsn", "rebuilding")
    TERM_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    FLUSH_LSN_FIELD_NUMBER: _ClassVar[int]
    REBUILDING_FIELD_NUMBER: _ClassVar[int]
    term: int
    node_id: str
    flush_lsn: int
    rebuilding: bool
    def __init__(self, term: _Optional[int] = ..., node_id: _Optional[str] = ..., flush_lsn: _Optional[int] = ..., rebuilding: _Optional[bool] = ...) -> None: ...

class TimeoutNow(_message.Message):
    __slots__ = ("term", "leader_id")
    TERM_FIELD_NUMBER: _ClassVar[int]
    LEADER_ID_FIELD_NUMBER: _ClassVar[int]
    term: int
    leader_id: str
    def __init__(self, term: _Optional[int] = ..., leader_id: _Optional[str] = ...) -> None: ...

class Envelope(_message.Message):
    __slots__ = ("hello", "hello_reply", "vote_request", "vote_response", "append_request", "append_response", "heartbeat", "heartbeat_response", "timeout_now")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    HELLO_REPLY_FIELD_NUMBER: _ClassVar[int]
    VOTE_REQUEST_FIELD_NUMBER: _ClassVar[int]
    VOTE_RESPONSE_FIELD_NUMBER: _ClassVar[int]
    APPEND_REQUEST_FIELD_NUMBER: _ClassVar[int]
    APPEND_RESPONSE_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_RESPONSE_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_NOW_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    hello_reply: HelloReply
    vote_request: VoteRequest
    vote_response: VoteResponse
    append_request: AppendRequest
    append_response: AppendResponse
    heartbeat: Heartbeat
    heartbeat_response: HeartbeatResponse
    timeout_now: TimeoutNow
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., hello_reply: _Optional[_Union[HelloReply, _Mapping]] = ..., vote_request: _Optional[_Union[VoteRequest, _Mapping]] = ..., vote_response: _Optional[_Union[VoteResponse, _Mapping]] = ..., append_request: _Optional[_Union[AppendRequest, _Mapping]] = ..., append_response: _Optional[_Union[AppendResponse, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., heartbeat_response: _Optional[_Union[HeartbeatResponse, _Mapping]] = ..., timeout_now: _Optional[_Union[TimeoutNow, _Mapping]] = ...) -> None: ...
