import datetime

from google.api import annotations_pb2 as _annotations_pb2
from omninode.api.v1 import annotations_pb2 as _annotations_pb2_1
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StampFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STAMP_FORMAT_UNSPECIFIED: _ClassVar[StampFormat]
    STAMP_FORMAT_LIGHTWEIGHT: _ClassVar[StampFormat]
    STAMP_FORMAT_RICH: _ClassVar[StampFormat]
STAMP_FORMAT_UNSPECIFIED: StampFormat
STAMP_FORMAT_LIGHTWEIGHT: StampFormat
STAMP_FORMAT_RICH: StampFormat

class HashRequest(_message.Message):
    __slots__ = ("content", "normalize")
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    NORMALIZE_FIELD_NUMBER: _ClassVar[int]
    content: bytes
    normalize: bool
    def __init__(self, content: _Optional[bytes] = ..., normalize: _Optional[bool] = ...) -> None: ...

class HashResponse(_message.Message):
    __slots__ = ("hash", "size_bytes", "execution_time_us")
    HASH_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_TIME_US_FIELD_NUMBER: _ClassVar[int]
    hash: str
    size_bytes: int
    execution_time_us: int
    def __init__(self, hash: _Optional[str] = ..., size_bytes: _Optional[int] = ..., execution_time_us: _Optional[int] = ...) -> None: ...

class HashStreamRequest(_message.Message):
    __slots__ = ("chunk",)
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    chunk: bytes
    def __init__(self, chunk: _Optional[bytes] = ...) -> None: ...

class HashStreamResponse(_message.Message):
    __slots__ = ("hash", "size_bytes", "chunks", "execution_time_us")
    HASH_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_TIME_US_FIELD_NUMBER: _ClassVar[int]
    hash: str
    size_bytes: int
    chunks: int
    execution_time_us: int
    def __init__(self, hash: _Optional[str] = ..., size_bytes: _Optional[int] = ..., chunks: _Optional[int] = ..., execution_time_us: _Optional[int] = ...) -> None: ...

class StampRecord(_message.Message):
    __slots__ = ("stamp_id", "namespace", "file_hash", "file_path", "file_size", "content_type", "format", "version", "protocol_version", "metadata_version", "idempotency_key", "created_at", "updated_at")
    STAMP_ID_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    FILE_HASH_FIELD_NUMBER: _ClassVar[int]
    FILE_PATH_FIELD_NUMBER: _ClassVar[int]
    FILE_SIZE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    METADATA_VERSION_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    stamp_id: str
    namespace: str
    file_hash: str
    file_path: str
    file_size: int
    content_type: str
    format: StampFormat
    version: str
    protocol_version: str
    metadata_version: str
    idempotency_key: str
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    def __init__(self, stamp_id: _Optional[str] = ..., namespace: _Optional[str] = ..., file_hash: _Optional[str] = ..., file_path: _Optional[str] = ..., file_size: _Optional[int] = ..., content_type: _Optional[str] = ..., format: _Optional[_Union[StampFormat, str]] = ..., version: _Optional[str] = ..., protocol_version: _Optional[str] = ..., metadata_version: _Optional[str] = ..., idempotency_key: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class StampRequest(_message.Message):
    __slots__ = ("namespace", "content", "file_path", "content_type", "format", "version", "correlation_id", "idempotency_key")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    FILE_PATH_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    content: str
    file_path: str
    content_type: str
    format: StampFormat
    version: str
    correlation_id: str
    idempotency_key: str
    def __init__(self, namespace: _Optional[str] = ..., content: _Optional[str] = ..., file_path: _Optional[str] = ..., content_type: _Optional[str] = ..., format: _Optional[_Union[StampFormat, str]] = ..., version: _Optional[str] = ..., correlation_id: _Optional[str] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class StampResponse(_message.Message):
    __slots__ = ("stamp", "stamped_content", "stamp_text", "created")
    STAMP_FIELD_NUMBER: _ClassVar[int]
    STAMPED_CONTENT_FIELD_NUMBER: _ClassVar[int]
    STAMP_TEXT_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    stamp: StampRecord
    stamped_content: str
    stamp_text: str
    created: bool
    def __init__(self, stamp: _Optional[_Union[StampRecord, _Mapping]] = ..., stamped_content: _Optional[str] = ..., stamp_text: _Optional[str] = ..., created: _Optional[bool] = ...) -> None: ...

class ValidateRequest(_message.Message):
    __slots__ = ("content", "expected_hash")
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_HASH_FIELD_NUMBER: _ClassVar[int]
    content: str
    expected_hash: str
    def __init__(self, content: _Optional[str] = ..., expected_hash: _Optional[str] = ...) -> None: ...

class StampCheck(_message.Message):
    __slots__ = ("format", "stamp_id", "stamped_hash", "timestamp", "valid", "reason")
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    STAMP_ID_FIELD_NUMBER: _ClassVar[int]
    STAMPED_HASH_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    VALID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    format: StampFormat
    stamp_id: str
    stamped_hash: str
    timestamp: str
    valid: bool
    reason: str
    def __init__(self, format: _Optional[_Union[StampFormat, str]] = ..., stamp_id: _Optional[str] = ..., stamped_hash: _Optional[str] = ..., timestamp: _Optional[str] = ..., valid: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...

class ValidateResponse(_message.Message):
    __slots__ = ("valid", "current_hash", "stamps", "reason")
    VALID_FIELD_NUMBER: _ClassVar[int]
    CURRENT_HASH_FIELD_NUMBER: _ClassVar[int]
    STAMPS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    valid: bool
    current_hash: str
    stamps: _containers.RepeatedCompositeFieldContainer[StampCheck]
    reason: str
    def __init__(self, valid: _Optional[bool] = ..., current_hash: _Optional[str] = ..., stamps: _Optional[_Iterable[_Union[StampCheck, _Mapping]]] = ..., reason: _Optional[str] = ...) -> None: ...

class GetStampRequest(_message.Message):
    __slots__ = ("namespace", "file_hash")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    FILE_HASH_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    file_hash: str
    def __init__(self, namespace: _Optional[str] = ..., file_hash: _Optional[str] = ...) -> None: ...

class GetStampResponse(_message.Message):
    __slots__ = ("stamp",)
    STAMP_FIELD_NUMBER: _ClassVar[int]
    stamp: StampRecord
    def __init__(self, stamp: _Optional[_Union[StampRecord, _Mapping]] = ...) -> None: ...

class ListStampsRequest(_message.Message):
    __slots__ = ("namespace", "page_size", "page_token")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    page_size: int
    page_token: str
    def __init__(self, namespace: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListStampsResponse(_message.Message):
    __slots__ = ("stamps", "next_page_token")
    STAMPS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    stamps: _containers.RepeatedCompositeFieldContainer[StampRecord]
    next_page_token: str
    def __init__(self, stamps: _Optional[_Iterable[_Union[StampRecord, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class BatchStampItem(_message.Message):
    __slots__ = ("content", "file_path", "content_type", "format", "idempotency_key")
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    FILE_PATH_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    content: str
    file_path: str
    content_type: str
    format: StampFormat
    idempotency_key: str
    def __init__(self, content: _Optional[str] = ..., file_path: _Optional[str] = ..., content_type: _Optional[str] = ..., format: _Optional[_Union[StampFormat, str]] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class BatchStampRequest(_message.Message):
    __slots__ = ("namespace", "items", "format", "version", "correlation_id")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    items: _containers.RepeatedCompositeFieldContainer[BatchStampItem]
    format: StampFormat
    version: str
    correlation_id: str
    def __init__(self, namespace: _Optional[str] = ..., items: _Optional[_Iterable[_Union[BatchStampItem, _Mapping]]] = ..., format: _Optional[_Union[StampFormat, str]] = ..., version: _Optional[str] = ..., correlation_id: _Optional[str] = ...) -> None: ...

class ItemError(_message.Message):
    __slots__ = ("code", "reason", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    reason: str
    message: str
    def __init__(self, code: _Optional[int] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class BatchStampResult(_message.Message):
    __slots__ = ("index", "stamp", "error")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    STAMP_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    index: int
    stamp: StampResponse
    error: ItemError
    def __init__(self, index: _Optional[int] = ..., stamp: _Optional[_Union[StampResponse, _Mapping]] = ..., error: _Optional[_Union[ItemError, _Mapping]] = ...) -> None: ...

class BatchStampResponse(_message.Message):
    __slots__ = ("results", "succeeded", "failed")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    SUCCEEDED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[BatchStampResult]
    succeeded: int
    failed: int
    def __init__(self, results: _Optional[_Iterable[_Union[BatchStampResult, _Mapping]]] = ..., succeeded: _Optional[int] = ..., failed: _Optional[int] = ...) -> None: ...
