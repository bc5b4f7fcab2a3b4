"""The sync and asyncio clients; see the package docstring."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from typing import AsyncIterator, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import grpc
import grpc.aio
from google.rpc import error_details_pb2, status_pb2

from omninode.orchestrator.v1 import orchestrator_pb2 as opb
from omninode.orchestrator.v1 import orchestrator_pb2_grpc as ogrpc
from omninode.reducer.v1 import reducer_pb2 as rpb
from omninode.reducer.v1 import reducer_pb2_grpc as rgrpc
from omninode.stamping.v1 import stamping_pb2 as spb
from omninode.stamping.v1 import stamping_pb2_grpc as sgrpc

REASON_KEY = "omninode-error-reason"
DETAILS_KEY = "grpc-status-details-bin"
WorkflowState = opb.WorkflowState


class OmniNodeError(Exception):
    """A failed call: its gRPC ``code``, the mesh's ``reason`` and ``message``,
    and the status details: ``metadata`` (``google.rpc.ErrorInfo``: what the
    error is about, e.g. ``namespace``, ``workflow_id``) and
    ``field_violations`` (``google.rpc.BadRequest``: ``(field, description)``)."""

    def __init__(
        self,
        code: grpc.StatusCode,
        reason: str,
        message: str,
        metadata: Optional[Dict[str, str]] = None,
        field_violations: Optional[List[Tuple[str, str]]] = None,
    ):
        super().__init__(f"{code.name} {reason or '-'}: {message}")
        self.code = code
        self.reason = reason
        self.message = message
        self.metadata = metadata or {}
        self.field_violations = field_violations or []

    @classmethod
    def from_rpc(cls, error: grpc.RpcError) -> "OmniNodeError":
        trailers = error.trailing_metadata() or ()
        reason = next((value for key, value in trailers if key == REASON_KEY), "")
        metadata: Dict[str, str] = {}
        violations: List[Tuple[str, str]] = []
        raw = next((value for key, value in trailers if key == DETAILS_KEY), None)
        if raw:
            status = status_pb2.Status.FromString(raw)
            for detail in status.details:
                if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                    info = error_details_pb2.ErrorInfo()
                    detail.Unpack(info)
                    reason, metadata = info.reason, dict(info.metadata)
                elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                    bad = error_details_pb2.BadRequest()
                    detail.Unpack(bad)
                    violations = [(v.field, v.description) for v in bad.field_violations]
        return cls(error.code(), reason, error.details() or "", metadata, violations)


@dataclass(frozen=True)
class Endpoints:
    """Where the services are (``host:port``); ``omninode up``'s defaults."""

    stamping: str = "127.0.0.1:8053"
    orchestrator: str = "127.0.0.1:8060"
    reducer: str = "127.0.0.1:8061"


def _credentials(tls: bool, ca_file, cert_file, key_file):
    if not tls and not ca_file:
        return None

    def read(path):
        if path is None:
            return None
        with open(path, "rb") as handle:
            return handle.read()

    return grpc.ssl_channel_credentials(read(ca_file), read(key_file), read(cert_file))


def _metadata(api_key: Optional[str], token: Optional[str]):
    if api_key:
        return (("x-api-key", api_key),)
    if token:
        return (("authorization", f"Bearer {token}"),)
    return ()


def _options(server_name: Optional[str]):
    options = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]
    if server_name:
        options.append(("grpc.ssl_target_name_override", server_name))
    return options


def _pause(attempt: int) -> float:
    return random.uniform(0, min(2.0, 0.05 * 2**attempt))


def _workflow_request(cls, namespace, content, file_path, context, definition, correlation_id, idempotency_key):
    return cls(
        namespace=namespace,
        input=opb.WorkflowInput(content=content, file_path=file_path, context=dict(context or {})),
        definition=definition,
        correlation_id=correlation_id,
        idempotency_key=idempotency_key,
    )


class _Base:
    def __init__(self, endpoints, api_key, token, tls, ca_file, cert_file, key_file, server_name, timeout, retries):
        self.endpoints = endpoints or Endpoints()
        self.metadata = _metadata(api_key, token)
        self.credentials = _credentials(tls, ca_file, cert_file, key_file)
        self.options = _options(server_name)
        self.timeout = timeout
        self.retries = retries


class Client(_Base):
    """The mesh, synchronously. Use as a context manager or call :meth:`close`."""

    def __init__(
        self,
        endpoints: Optional[Endpoints] = None,
        *,
        api_key: Optional[str] = None,
        token: Optional[str] = None,
        tls: bool = False,
        ca_file: Optional[str] = None,
        cert_file: Optional[str] = None,
        key_file: Optional[str] = None,
        server_name: Optional[str] = None,
        timeout: float = 30.0,
        retries: int = 3,
    ):
        super().__init__(endpoints, api_key, token, tls, ca_file, cert_file, key_file, server_name, timeout, retries)
        self._channels = [self._channel(target) for target in (self.endpoints.stamping, self.endpoints.orchestrator, self.endpoints.reducer)]
        self.stamping = sgrpc.StampingServiceStub(self._channels[0])
        self.orchestrator = ogrpc.OrchestratorServiceStub(self._channels[1])
        self.reducer = rgrpc.ReducerServiceStub(self._channels[2])

    def _channel(self, target: str) -> grpc.Channel:
        if self.credentials is not None:
            return grpc.secure_channel(target, self.credentials, options=self.options)
        return grpc.insecure_channel(target, options=self.options)

    def close(self) -> None:
        for channel in self._channels:
            channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *_exc) -> None:
        self.close()

    def _call(self, method, request, timeout: Optional[float] = None):
        attempt = 0
        while True:
            try:
                return method(request, timeout=timeout or self.timeout, metadata=self.metadata)
            except grpc.RpcError as error:
                if error.code() == grpc.StatusCode.UNAVAILABLE and attempt < self.retries:
                    attempt += 1
                    time.sleep(_pause(attempt))
                    continue
                raise OmniNodeError.from_rpc(error) from None

    def _stream(self, method, request) -> Iterator:
        try:
            yield from method(request, metadata=self.metadata)
        except grpc.RpcError as error:
            raise OmniNodeError.from_rpc(error) from None

    # -- stamping -----------------------------------------------------------
    def hash(self, content: bytes | str) -> str:
        data = content.encode() if isinstance(content, str) else content
        return self._call(self.stamping.Hash, spb.HashRequest(content=data, normalize=True)).hash

    def stamp(self, namespace: str, content: str, *, file_path: str = "", content_type: str = "", rich: bool = False, idempotency_key: str = "") -> spb.StampResponse:
        request = spb.StampRequest(
            namespace=namespace, content=content, file_path=file_path, content_type=content_type,
            format=spb.STAMP_FORMAT_RICH if rich else spb.STAMP_FORMAT_LIGHTWEIGHT, idempotency_key=idempotency_key,
        )
        return self._call(self.stamping.Stamp, request)

    def batch_stamp(self, namespace: str, items: Iterable[tuple[str, str]]) -> spb.BatchStampResponse:
        """Stamps ``(content, file_path)`` pairs in one call; each result says how its item went."""
        batch = [spb.BatchStampItem(content=content, file_path=path) for content, path in items]
        return self._call(self.stamping.BatchStamp, spb.BatchStampRequest(namespace=namespace, items=batch))

    def validate(self, content: str, expected_hash: str = "") -> spb.ValidateResponse:
        return self._call(self.stamping.Validate, spb.ValidateRequest(content=content, expected_hash=expected_hash))

    def get_stamp(self, namespace: str, file_hash: str) -> spb.StampRecord:
        return self._call(self.stamping.GetStamp, spb.GetStampRequest(namespace=namespace, file_hash=file_hash)).stamp

    def iter_stamps(self, namespace: str, page_size: int = 100) -> Iterator[spb.StampRecord]:
        """Every stamp of ``namespace``, newest first, page after page."""
        token = ""
        while True:
            page = self._call(self.stamping.ListStamps, spb.ListStampsRequest(namespace=namespace, page_size=page_size, page_token=token))
            yield from page.stamps
            token = page.next_page_token
            if not token:
                return

    # -- workflows ----------------------------------------------------------
    def start_workflow(self, namespace: str, content: str, *, file_path: str = "", context=None, definition: str = "", correlation_id: str = "", idempotency_key: str = "") -> opb.Workflow:
        request = _workflow_request(opb.StartWorkflowRequest, namespace, content, file_path, context, definition, correlation_id, idempotency_key)
        return self._call(self.orchestrator.StartWorkflow, request).workflow

    def run_workflow(self, namespace: str, content: str, *, file_path: str = "", context=None, definition: str = "", correlation_id: str = "", idempotency_key: str = "", timeout: Optional[float] = None) -> opb.Workflow:
        """Starts a workflow and returns it once it stops running (terminal, WAITING or PAUSED)."""
        request = _workflow_request(opb.RunWorkflowRequest, namespace, content, file_path, context, definition, correlation_id, idempotency_key)
        return self._call(self.orchestrator.RunWorkflow, request, timeout).workflow

    def get_workflow(self, workflow_id: str) -> opb.Workflow:
        return self._call(self.orchestrator.GetWorkflow, opb.GetWorkflowRequest(workflow_id=workflow_id)).workflow

    def iter_workflows(self, namespace: str, state: int = 0, page_size: int = 100) -> Iterator[opb.Workflow]:
        token = ""
        while True:
            request = opb.ListWorkflowsRequest(namespace=namespace, state=state, page_size=page_size, page_token=token)
            page = self._call(self.orchestrator.ListWorkflows, request)
            yield from page.workflows
            token = page.next_page_token
            if not token:
                return

    def watch_workflow(self, workflow_id: str) -> Iterator[opb.Workflow]:
        """The workflow now, then every change, ending after a terminal state."""
        for update in self._stream(self.orchestrator.WatchWorkflow, opb.WatchWorkflowRequest(workflow_id=workflow_id)):
            yield update.workflow

    def cancel_workflow(self, workflow_id: str, reason: str = "") -> opb.Workflow:
        return self._call(self.orchestrator.CancelWorkflow, opb.CancelWorkflowRequest(workflow_id=workflow_id, reason=reason)).workflow

    def approve_step(self, workflow_id: str, step_name: str, approver: str, comment: str = "") -> opb.Workflow:
        request = opb.ApproveStepRequest(workflow_id=workflow_id, step_name=step_name, approver=approver, comment=comment)
        return self._call(self.orchestrator.ApproveStep, request).workflow

    def reject_step(self, workflow_id: str, step_name: str, approver: str, comment: str = "") -> opb.Workflow:
        request = opb.RejectStepRequest(workflow_id=workflow_id, step_name=step_name, approver=approver, comment=comment)
        return self._call(self.orchestrator.RejectStep, request).workflow

    # -- aggregates ---------------------------------------------------------
    def namespace_stats(self, namespace: str) -> rpb.NamespaceStats:
        return self._call(self.reducer.GetNamespaceStats, rpb.GetNamespaceStatsRequest(namespace=namespace)).stats


class AsyncClient(_Base):
    """The mesh, with asyncio. ``async with AsyncClient() as mesh: …``"""

    def __init__(
        self,
        endpoints: Optional[Endpoints] = None,
        *,
        api_key: Optional[str] = None,
        token: Optional[str] = None,
        tls: bool = False,
        ca_file: Optional[str] = None,
        cert_file: Optional[str] = None,
        key_file: Optional[str] = None,
        server_name: Optional[str] = None,
        timeout: float = 30.0,
        retries: int = 3,
    ):
        super().__init__(endpoints, api_key, token, tls, ca_file, cert_file, key_file, server_name, timeout, retries)
        self._channels = [self._channel(target) for target in (self.endpoints.stamping, self.endpoints.orchestrator, self.endpoints.reducer)]
        self.stamping = sgrpc.StampingServiceStub(self._channels[0])
        self.orchestrator = ogrpc.OrchestratorServiceStub(self._channels[1])
        self.reducer = rgrpc.ReducerServiceStub(self._channels[2])

    def _channel(self, target: str) -> grpc.aio.Channel:
        if self.credentials is not None:
            return grpc.aio.secure_channel(target, self.credentials, options=self.options)
        return grpc.aio.insecure_channel(target, options=self.options)

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *_exc) -> None:
        await self.close()

    async def _call(self, method, request, timeout: Optional[float] = None):
        attempt = 0
        while True:
            try:
                return await method(request, timeout=timeout or self.timeout, metadata=self.metadata)
            except grpc.aio.AioRpcError as error:
                if error.code() == grpc.StatusCode.UNAVAILABLE and attempt < self.retries:
                    attempt += 1
                    await asyncio.sleep(_pause(attempt))
                    continue
                raise OmniNodeError.from_rpc(error) from None

    async def hash(self, content: bytes | str) -> str:
        data = content.encode() if isinstance(content, str) else content
        return (await self._call(self.stamping.Hash, spb.HashRequest(content=data, normalize=True))).hash

    async def stamp(self, namespace: str, content: str, *, file_path: str = "", content_type: str = "", rich: bool = False, idempotency_key: str = "") -> spb.StampResponse:
        request = spb.StampRequest(
            namespace=namespace, content=content, file_path=file_path, content_type=content_type,
            format=spb.STAMP_FORMAT_RICH if rich else spb.STAMP_FORMAT_LIGHTWEIGHT, idempotency_key=idempotency_key,
        )
        return await self._call(self.stamping.Stamp, request)

    async def batch_stamp(self, namespace: str, items: Iterable[tuple[str, str]]) -> spb.BatchStampResponse:
        batch = [spb.BatchStampItem(content=content, file_path=path) for content, path in items]
        return await self._call(self.stamping.BatchStamp, spb.BatchStampRequest(namespace=namespace, items=batch))

    async def validate(self, content: str, expected_hash: str = "") -> spb.ValidateResponse:
        return await self._call(self.stamping.Validate, spb.ValidateRequest(content=content, expected_hash=expected_hash))

    async def iter_stamps(self, namespace: str, page_size: int = 100) -> AsyncIterator[spb.StampRecord]:
        token = ""
        while True:
            page = await self._call(self.stamping.ListStamps, spb.ListStampsRequest(namespace=namespace, page_size=page_size, page_token=token))
            for stamp in page.stamps:
                yield stamp
            token = page.next_page_token
            if not token:
                return

    async def start_workflow(self, namespace: str, content: str, *, file_path: str = "", context=None, definition: str = "", correlation_id: str = "", idempotency_key: str = "") -> opb.Workflow:
        request = _workflow_request(opb.StartWorkflowRequest, namespace, content, file_path, context, definition, correlation_id, idempotency_key)
        return (await self._call(self.orchestrator.StartWorkflow, request)).workflow

    async def run_workflow(self, namespace: str, content: str, *, file_path: str = "", context=None, definition: str = "", correlation_id: str = "", idempotency_key: str = "", timeout: Optional[float] = None) -> opb.Workflow:
        request = _workflow_request(opb.RunWorkflowRequest, namespace, content, file_path, context, definition, correlation_id, idempotency_key)
        return (await self._call(self.orchestrator.RunWorkflow, request, timeout)).workflow

    async def get_workflow(self, workflow_id: str) -> opb.Workflow:
        return (await self._call(self.orchestrator.GetWorkflow, opb.GetWorkflowRequest(workflow_id=workflow_id))).workflow

    async def watch_workflow(self, workflow_id: str) -> AsyncIterator[opb.Workflow]:
        call = self.orchestrator.WatchWorkflow(opb.WatchWorkflowRequest(workflow_id=workflow_id), metadata=self.metadata)
        try:
            async for update in call:
                yield update.workflow
        except grpc.aio.AioRpcError as error:
            raise OmniNodeError.from_rpc(error) from None

    async def cancel_workflow(self, workflow_id: str, reason: str = "") -> opb.Workflow:
        return (await self._call(self.orchestrator.CancelWorkflow, opb.CancelWorkflowRequest(workflow_id=workflow_id, reason=reason))).workflow

    async def namespace_stats(self, namespace: str) -> rpb.NamespaceStats:
        return (await self._call(self.reducer.GetNamespaceStats, rpb.GetNamespaceStatsRequest(namespace=namespace))).stats
