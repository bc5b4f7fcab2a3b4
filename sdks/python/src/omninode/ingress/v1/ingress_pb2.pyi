import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.rpc import status_pb2 as _status_pb2
from omninode.orchestrator.v1 import orchestrator_pb2 as _orchestrator_pb2
from omninode.stamping.v1 import stamping_pb2 as _stamping_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Stage(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STAGE_UNSPECIFIED: _ClassVar[Stage]
    STAGE_DONE: _ClassVar[Stage]
    STAGE_ACCEPTED: _ClassVar[Stage]
    STAGE_ENDED: _ClassVar[Stage]
STAGE_UNSPECIFIED: Stage
STAGE_DONE: Stage
STAGE_ACCEPTED: Stage
STAGE_ENDED: Stage

class Request(_message.Message):
    __slots__ = ("stamp", "batch_stamp", "start_workflow", "run_workflow", "approve_step", "reject_step")
    STAMP_FIELD_NUMBER: _ClassVar[int]
    BATCH_STAMP_FIELD_NUMBER: _ClassVar[int]
    START_WORKFLOW_FIELD_NUMBER: _ClassVar[int]
    RUN_WORKFLOW_FIELD_NUMBER: _ClassVar[int]
    APPROVE_STEP_FIELD_NUMBER: _ClassVar[int]
    REJECT_STEP_FIELD_NUMBER: _ClassVar[int]
    stamp: _stamping_pb2.StampRequest
    batch_stamp: _stamping_pb2.BatchStampRequest
    start_workflow: _orchestrator_pb2.StartWorkflowRequest
    run_workflow: _orchestrator_pb2.RunWorkflowRequest
    approve_step: _orchestrator_pb2.ApproveStepRequest
    reject_step: _orchestrator_pb2.RejectStepRequest
    def __init__(self, stamp: _Optional[_Union[_stamping_pb2.StampRequest, _Mapping]] = ..., batch_stamp: _Optional[_Union[_stamping_pb2.BatchStampRequest, _Mapping]] = ..., start_workflow: _Optional[_Union[_orchestrator_pb2.StartWorkflowRequest, _Mapping]] = ..., run_workflow: _Optional[_Union[_orchestrator_pb2.RunWorkflowRequest, _Mapping]] = ..., approve_step: _Optional[_Union[_orchestrator_pb2.ApproveStepRequest, _Mapping]] = ..., reject_step: _Optional[_Union[_orchestrator_pb2.RejectStepRequest, _Mapping]] = ...) -> None: ...

class Response(_message.Message):
    __slots__ = ("event_id", "correlation_id", "request_id", "kind", "stage", "answered_at", "stamp", "batch_stamp", "start_workflow", "run_workflow", "approve_step", "reject_step", "error")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    ANSWERED_AT_FIELD_NUMBER: _ClassVar[int]
    STAMP_FIELD_NUMBER: _ClassVar[int]
    BATCH_STAMP_FIELD_NUMBER: _ClassVar[int]
    START_WORKFLOW_FIELD_NUMBER: _ClassVar[int]
    RUN_WORKFLOW_FIELD_NUMBER: _ClassVar[int]
    APPROVE_STEP_FIELD_NUMBER: _ClassVar[int]
    REJECT_STEP_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    correlation_id: str
    request_id: str
    kind: str
    stage: Stage
    answered_at: _timestamp_pb2.Timestamp
    stamp: _stamping_pb2.StampResponse
    batch_stamp: _stamping_pb2.BatchStampResponse
    start_workflow: _orchestrator_pb2.StartWorkflowResponse
    run_workflow: _orchestrator_pb2.RunWorkflowResponse
    approve_step: _orchestrator_pb2.ApproveStepResponse
    reject_step: _orchestrator_pb2.RejectStepResponse
    error: _status_pb2.Status
    def __init__(self, event_id: _Optional[str] = ..., correlation_id: _Optional[str] = ..., request_id: _Optional[str] = ..., kind: _Optional[str] = ..., stage: _Optional[_Union[Stage, str]] = ..., answered_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., stamp: _Optional[_Union[_stamping_pb2.StampResponse, _Mapping]] = ..., batch_stamp: _Optional[_Union[_stamping_pb2.BatchStampResponse, _Mapping]] = ..., start_workflow: _Optional[_Union[_orchestrator_pb2.StartWorkflowResponse, _Mapping]] = ..., run_workflow: _Optional[_Union[_orchestrator_pb2.RunWorkflowResponse, _Mapping]] = ..., approve_step: _Optional[_Union[_orchestrator_pb2.ApproveStepResponse, _Mapping]] = ..., reject_step: _Optional[_Union[_orchestrator_pb2.RejectStepResponse, _Mapping]] = ..., error: _Optional[_Union[_status_pb2.Status, _Mapping]] = ...) -> None: ...
