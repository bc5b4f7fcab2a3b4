import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from omninode.orchestrator.v1 import orchestrator_pb2 as _orchestrator_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EventEnvelope(_message.Message):
    __slots__ = ("event_id", "event_type", "event_version", "occurred_at", "source_service", "source_instance", "correlation_id", "causation_id", "namespace", "partition_key", "stamp_created", "workflow_state_changed", "aggregate_updated")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    EVENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    SOURCE_SERVICE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_INSTANCE_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    CAUSATION_ID_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    PARTITION_KEY_FIELD_NUMBER: _ClassVar[int]
    STAMP_CREATED_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_STATE_CHANGED_FIELD_NUMBER: _ClassVar[int]
    AGGREGATE_UPDATED_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    event_type: str
    event_version: int
    occurred_at: _timestamp_pb2.Timestamp
    source_service: str
    source_instance: str
    correlation_id: str
    causation_id: str
    namespace: str
    partition_key: str
    stamp_created: StampCreated
    workflow_state_changed: WorkflowStateChanged
    aggregate_updated: AggregateUpdated
    def __init__(self, event_id: _Optional[str] = ..., event_type: _Optional[str] = ..., event_version: _Optional[int] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., source_service: _Optional[str] = ..., source_instance: _Optional[str] = ..., correlation_id: _Optional[str] = ..., causation_id: _Optional[str] = ..., namespace: _Optional[str] = ..., partition_key: _Optional[str] = ..., stamp_created: _Optional[_Union[StampCreated, _Mapping]] = ..., workflow_state_changed: _Optional[_Union[WorkflowStateChanged, _Mapping]] = ..., aggregate_updated: _Optional[_Union[AggregateUpdated, _Mapping]] = ...) -> None: ...

class StampCreated(_message.Message):
    __slots__ = ("stamp_id", "file_hash", "file_path", "file_size", "content_type", "workflow_id", "created_at")
    STAMP_ID_FIELD_NUMBER: _ClassVar[int]
    FILE_HASH_FIELD_NUMBER: _ClassVar[int]
    FILE_PATH_FIELD_NUMBER: _ClassVar[int]
    FILE_SIZE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    stamp_id: str
    file_hash: str
    file_path: str
    file_size: int
    content_type: str
    workflow_id: str
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, stamp_id: _Optional[str] = ..., file_hash: _Optional[str] = ..., file_path: _Optional[str] = ..., file_size: _Optional[int] = ..., content_type: _Optional[str] = ..., workflow_id: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class WorkflowStateChanged(_message.Message):
    __slots__ = ("workflow_id", "from_state", "to_state", "reason", "file_hash", "stamp_id", "changed_at", "step", "actor", "definition", "waiting_for")
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_STATE_FIELD_NUMBER: _ClassVar[int]
    TO_STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    FILE_HASH_FIELD_NUMBER: _ClassVar[int]
    STAMP_ID_FIELD_NUMBER: _ClassVar[int]
    CHANGED_AT_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    DEFINITION_FIELD_NUMBER: _ClassVar[int]
    WAITING_FOR_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    from_state: _orchestrator_pb2.WorkflowState
    to_state: _orchestrator_pb2.WorkflowState
    reason: str
    file_hash: str
    stamp_id: str
    changed_at: _timestamp_pb2.Timestamp
    step: str
    actor: str
    definition: str
    waiting_for: str
    def __init__(self, workflow_id: _Optional[str] = ..., from_state: _Optional[_Union[_orchestrator_pb2.WorkflowState, str]] = ..., to_state: _Optional[_Union[_orchestrator_pb2.WorkflowState, str]] = ..., reason: _Optional[str] = ..., file_hash: _Optional[str] = ..., stamp_id: _Optional[str] = ..., changed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., step: _Optional[str] = ..., actor: _Optional[str] = ..., definition: _Optional[str] = ..., waiting_for: _Optional[str] = ...) -> None: ...

class AggregateUpdated(_message.Message):
    __slots__ = ("total_stamps", "total_size_bytes", "unique_workflows", "version", "updated_at")
    TOTAL_STAMPS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    UNIQUE_WORKFLOWS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    total_stamps: int
    total_size_bytes: int
    unique_workflows: int
    version: int
    updated_at: _timestamp_pb2.Timestamp
    def __init__(self, total_stamps: _Optional[int] = ..., total_size_bytes: _Optional[int] = ..., unique_workflows: _Optional[int] = ..., version: _Optional[int] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
