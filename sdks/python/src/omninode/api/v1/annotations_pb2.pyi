from google.protobuf import descriptor_pb2 as _descriptor_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor
HTTP_SUCCESS_STATUS_FIELD_NUMBER: _ClassVar[int]
http_success_status: _descriptor.FieldDescriptor
HTTP_RAW_CONTENT_FIELD_NUMBER: _ClassVar[int]
http_raw_content: _descriptor.FieldDescriptor

class HttpRawContent(_message.Message):
    __slots__ = ("request_field", "response_field", "batch_method")
    REQUEST_FIELD_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_FIELD_NUMBER: _ClassVar[int]
    BATCH_METHOD_FIELD_NUMBER: _ClassVar[int]
    request_field: str
    response_field: str
    batch_method: str
    def __init__(self, request_field: _Optional[str] = ..., response_field: _Optional[str] = ..., batch_method: _Optional[str] = ...) -> None: ...
