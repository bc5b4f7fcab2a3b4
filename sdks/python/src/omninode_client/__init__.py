"""Client of the OmniNode Bridge mesh.

One object for the whole mesh — stamping, the orchestrator and the reducer —
over gRPC, in a synchronous (:class:`Client`) and an asyncio
(:class:`AsyncClient`) flavour, with the generated messages under
``omninode.<service>.v1`` (``stamping_pb2``, ``orchestrator_pb2``,
``reducer_pb2``) for anything the conveniences do not cover.

    from omninode_client import Client

    with Client(api_key="k1") as mesh:
        stamped = mesh.stamp("docs.team", "# Title\\n", file_path="title.md")
        workflow = mesh.run_workflow("docs.team", "# Title\\n")
        for update in mesh.watch_workflow(workflow.workflow_id):
            print(update.state)

Every failed call raises :class:`OmniNodeError` with the gRPC ``code``, the
mesh's machine-readable ``reason`` (the ``omninode-error-reason`` trailer)
and the message. Calls have a deadline (``timeout``) and are retried on
UNAVAILABLE (``retries`` times, with exponential backoff and jitter).
"""

from ._client import AsyncClient, Client, Endpoints, OmniNodeError, WorkflowState

__all__ = ["AsyncClient", "Client", "Endpoints", "OmniNodeError", "WorkflowState"]
