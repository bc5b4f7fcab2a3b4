"""The Python SDK against a real `omninode up`: sync and asyncio."""

import subprocess
import tempfile
import uuid
from pathlib import Path

import grpc
import pytest

from omninode.orchestrator.v1 import orchestrator_pb2 as opb
from omninode_client import AsyncClient, Client, OmniNodeError, WorkflowState

from conftest import Mesh


def namespace() -> str:
    return "sdk.t" + uuid.uuid4().hex[:8]


def test_stamp_validate_hash_batch_and_paging(mesh):
    ns = namespace()
    with Client(mesh.endpoints) as client:
        stamped = client.stamp(ns, "# Title\n", file_path="title.md")
        assert stamped.created and len(stamped.stamp.file_hash) == 64
        assert client.hash("# Title\n") == stamped.stamp.file_hash
        verdict = client.validate(stamped.stamped_content)
        assert verdict.valid and verdict.current_hash == stamped.stamp.file_hash
        assert not client.validate(stamped.stamped_content + "changed").valid
        batch = client.batch_stamp(ns, [(f"doc {i}", f"d{i}.md") for i in range(4)] + [("   ", "empty.md")])
        assert (batch.succeeded, batch.failed) == (4, 1)
        assert batch.results[4].error.reason, "each item says how it went"
        hashes = [stamp.file_hash for stamp in client.iter_stamps(ns, page_size=2)]
        assert len(hashes) == 5 and len(set(hashes)) == 5, "every page, every stamp once"
        assert client.get_stamp(ns, stamped.stamp.file_hash).file_path == "title.md"


def test_workflows_run_watch_and_cancel(mesh):
    ns = namespace()
    with Client(mesh.endpoints) as client:
        done = client.run_workflow(ns, "# Workflow\n", file_path="w.md")
        assert done.state == WorkflowState.WORKFLOW_STATE_COMPLETED, done.error_message
        states = [update.state for update in client.watch_workflow(done.workflow_id)]
        assert states[-1] == WorkflowState.WORKFLOW_STATE_COMPLETED
        assert [w.workflow_id for w in client.iter_workflows(ns, page_size=1)] == [done.workflow_id]

        definition = opb.WorkflowDefinition(name="sdk-gate", steps=[opb.StepDefinition(name="review", approval=opb.ApprovalStep())])
        client.orchestrator.CreateWorkflowDefinition(opb.CreateWorkflowDefinitionRequest(definition=definition))
        waiting = client.run_workflow(ns, "x", definition="sdk-gate")
        assert waiting.state == WorkflowState.WORKFLOW_STATE_WAITING
        cancelled = client.cancel_workflow(waiting.workflow_id, "not needed")
        assert cancelled.state == WorkflowState.WORKFLOW_STATE_CANCELLED
        with pytest.raises(OmniNodeError) as again:
            client.cancel_workflow(waiting.workflow_id)
        assert (again.value.code, again.value.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "WORKFLOW_TERMINAL")

        approved = client.run_workflow(ns, "y", definition="sdk-gate")
        client.approve_step(approved.workflow_id, "review", "alice", "ok")
        final = list(client.watch_workflow(approved.workflow_id))[-1]
        assert final.state == WorkflowState.WORKFLOW_STATE_COMPLETED
        assert final.steps[-1].actor == "alice"


def test_errors_carry_code_and_reason(mesh):
    with Client(mesh.endpoints) as client:
        with pytest.raises(OmniNodeError) as bad:
            client.stamp("Not A Namespace", "x")
        assert (bad.value.code, bad.value.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "NAMESPACE_INVALID")
        assert bad.value.field_violations[0][0] == "namespace", "google.rpc.BadRequest"
        unknown = str(uuid.uuid4())
        with pytest.raises(OmniNodeError) as missing:
            client.get_workflow(unknown)
        assert (missing.value.code, missing.value.reason) == (grpc.StatusCode.NOT_FOUND, "WORKFLOW_NOT_FOUND")
        assert missing.value.metadata["workflow_id"] == unknown, "google.rpc.ErrorInfo metadata"


def test_unavailable_is_retried_then_reported():
    from omninode_client import Endpoints

    with Client(Endpoints("127.0.0.1:9", "127.0.0.1:9", "127.0.0.1:9"), retries=2, timeout=1) as client:
        with pytest.raises(OmniNodeError) as down:
            client.hash("x")
        assert down.value.code == grpc.StatusCode.UNAVAILABLE


async def test_asyncio_client(mesh):
    ns = namespace()
    async with AsyncClient(mesh.endpoints) as client:
        stamped = await client.stamp(ns, "# Async\n", file_path="a.md")
        assert (await client.validate(stamped.stamped_content)).valid
        await client.batch_stamp(ns, [("one", "1.md"), ("two", "2.md")])
        hashes = [stamp.file_hash async for stamp in client.iter_stamps(ns, page_size=1)]
        assert len(hashes) == 3
        done = await client.run_workflow(ns, "# Async workflow\n")
        assert done.state == WorkflowState.WORKFLOW_STATE_COMPLETED
        states = [update.state async for update in client.watch_workflow(done.workflow_id)]
        assert states[-1] == WorkflowState.WORKFLOW_STATE_COMPLETED
        with pytest.raises(OmniNodeError) as bad:
            await client.stamp("Bad NS", "x")
        assert bad.value.reason == "NAMESPACE_INVALID"


def test_api_key_option():
    secured = Mesh({"GATEWAY_API_KEYS": "sdk-key", "OMNINODE_CLIENT_TOKEN": "sdk-key"}, {"api_key": "sdk-key"})
    try:
        with Client(secured.endpoints, retries=0) as anonymous:
            with pytest.raises(OmniNodeError) as refused:
                anonymous.stamp("sdk.auth", "x")
            assert (refused.value.code, refused.value.reason) == (grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED")
        with Client(secured.endpoints, api_key="sdk-key") as client:
            assert client.run_workflow("sdk.auth", "# Key\n").state == WorkflowState.WORKFLOW_STATE_COMPLETED
    finally:
        secured.stop()


def test_tls_option():
    certs = Path(tempfile.mkdtemp())
    run = lambda *args: subprocess.run(args, check=True, capture_output=True, cwd=certs)  # noqa: E731
    run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
        "-subj", "/CN=sdk test CA", "-keyout", "ca.key", "-out", "ca.crt")
    run("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=localhost",
        "-keyout", "server.key", "-out", "server.csr")
    (certs / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    run("openssl", "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-days", "2", "-extfile", "san.ext", "-out", "server.crt")
    tls = {"TLS_CERT_FILE": str(certs / "server.crt"), "TLS_KEY_FILE": str(certs / "server.key"), "TLS_CA_FILE": str(certs / "ca.crt")}
    secured = Mesh(tls, {"tls": True, "ca_file": str(certs / "ca.crt")})
    try:
        with Client(secured.endpoints, tls=True, ca_file=str(certs / "ca.crt")) as client:
            assert client.run_workflow("sdk.tls", "# TLS\n").state == WorkflowState.WORKFLOW_STATE_COMPLETED
        with Client(secured.endpoints, retries=0, timeout=2) as plain:
            with pytest.raises(OmniNodeError) as refused:
                plain.hash("x")
            assert refused.value.code == grpc.StatusCode.UNAVAILABLE
    finally:
        secured.stop()
