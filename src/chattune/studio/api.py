"""``/api/v1``: the studio's REST control plane over the workspace's services.

Every answer is the typed document the CLI prints with ``--json`` (chattune.workspace.documents, chattune.schemas);
errors are the one error shape of chattune's servers. Routes are thin: parse, call the service, return the document.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import yaml
from fastapi import FastAPI, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from chattune import compute as compute_lib
from chattune.errors import UserError
from chattune.schemas import (
    ComputePublic,
    DeploymentList,
    EndpointList,
    EndpointPublic,
    JobEvent,
    JobList,
    JobPublic,
    JobSummary,
    ModelList,
    ModelVersionDetail,
)
from chattune.serving import sse
from chattune.serving.errors import documented_errors
from chattune.serving.keys import hash_key
from chattune.studio.auth import SESSION_COOKIE, SESSION_TTL_S, Sessions, session_id
from chattune.studio.token import StudioToken
from chattune.workspace import Workspace, documents

# How often a job's event stream looks for new events.
EVENT_POLL_S = 0.5
PREFIX = "/api/v1"
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml")


class Login(BaseModel):
    """``POST /api/v1/session``: the studio token, exchanged for a session cookie."""

    model_config = {"extra": "forbid"}

    token: str = Field(min_length=1)


def add_api(app: FastAPI, ws: Workspace, token: StudioToken, sessions: Sessions) -> None:
    """Add the ``/api/v1`` routes over workspace ``ws`` to ``app``."""

    # session ---------------------------------------------------------------------------------------------------
    @app.post(PREFIX + "/session", status_code=204, responses=documented_errors(400, 403, 422))
    async def login(body: Login, response: Response) -> Response:
        """Open a browser session: an HttpOnly, SameSite=Strict cookie for the studio's pages."""
        if not token.accepts(body.token):
            raise UserError("that is not the studio token", remedy="`chattune studio --rotate-token` makes a new one")
        answer = Response(status_code=204)
        answer.set_cookie(
            SESSION_COOKIE,
            sessions.open(hash_key(body.token)),
            max_age=int(SESSION_TTL_S),
            httponly=True,
            samesite="strict",
            path="/",
        )
        return answer

    @app.delete(PREFIX + "/session", status_code=204)
    async def logout(request: Request) -> Response:
        """End this browser's session."""
        sessions.close(session_id(request.headers))
        answer = Response(status_code=204)
        answer.delete_cookie(SESSION_COOKIE, path="/")
        return answer

    # catalog, compute, models ----------------------------------------------------------------------------------
    @app.get(PREFIX + "/compute")
    async def compute() -> ComputePublic:
        """This machine: CPUs, memory, GPUs."""
        return ComputePublic.model_validate(compute_lib.detect().to_dict())

    @app.get(PREFIX + "/models")
    async def models() -> ModelList:
        """Catalog entries and registered model versions."""
        return documents.model_list(ws)

    @app.get(PREFIX + "/models/{ref}", responses=documented_errors(404))
    async def model(ref: str) -> ModelVersionDetail:
        """A registered version (NAME:VERSION or NAME@ALIAS) with its lineage."""
        return documents.model_version(ws, ref)

    # jobs ------------------------------------------------------------------------------------------------------
    @app.get(PREFIX + "/jobs")
    async def jobs(limit: int = 20, after: str | None = None) -> JobList:
        """Jobs, newest first, a page at a time."""
        return documents.job_page(ws, limit, after)

    @app.post(PREFIX + "/jobs", status_code=201, responses=documented_errors(400, 404, 422))
    async def create_job(request: Request) -> JobSummary:
        """Start a job from a job document: JSON, or the job YAML itself (Content-Type: application/yaml)."""
        spec = await _job_document(request)
        job, _warnings = await asyncio.to_thread(ws.jobs.create, spec)
        return JobSummary.from_job(job)

    @app.get(PREFIX + "/jobs/{job_id}", responses=documented_errors(404))
    async def job(job_id: str) -> JobPublic:
        """A job with its steps, checkpoints, metrics and events."""
        return documents.job(ws, job_id)

    @app.post(PREFIX + "/jobs/{job_id}/cancel", responses=documented_errors(404, 409))
    async def cancel(job_id: str) -> JobSummary:
        """Cancel a queued or running job."""
        return JobSummary.from_job(ws.jobs.cancel(job_id))

    @app.get(
        PREFIX + "/jobs/{job_id}/events",
        response_class=StreamingResponse,
        responses={200: {"content": {sse.MEDIA_TYPE: {}}, "description": "job events, then [DONE]"}},
    )
    async def events(job_id: str) -> StreamingResponse:
        """The job's events as server-sent events (``fine_tuning.job.event``), live until the job ends."""
        ws.jobs.get(job_id)  # a 404 before the stream starts
        return StreamingResponse(_event_stream(ws, job_id), media_type=sse.MEDIA_TYPE)

    # endpoints -------------------------------------------------------------------------------------------------
    @app.get(PREFIX + "/endpoints")
    async def endpoints() -> EndpointList:
        """Endpoints, oldest first."""
        return documents.endpoint_list(ws)

    @app.get(PREFIX + "/endpoints/{name}", responses=documented_errors(404))
    async def endpoint(name: str) -> EndpointPublic:
        """An endpoint: state, URIs, traffic and deployments."""
        return documents.endpoint(ws, name)

    @app.get(PREFIX + "/endpoints/{name}/deployments", responses=documented_errors(404))
    async def deployments(name: str) -> DeploymentList:
        """An endpoint's deployments with their instances."""
        return documents.deployment_list(ws, name)


async def _job_document(request: Request) -> dict[str, Any]:
    """The job a request sends, as JSON or YAML; a clear 400 for anything else."""
    text = (await request.body()).decode("utf-8", errors="replace")
    kind = request.headers.get("content-type", "application/json").split(";")[0].strip()
    try:
        doc = yaml.safe_load(text) if kind in YAML_TYPES else json.loads(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise UserError(f"the job document is not valid {'YAML' if kind in YAML_TYPES else 'JSON'}: {exc}") from exc
    if not isinstance(doc, dict):
        raise UserError("the job document must be a mapping of the job file's sections (model, data, training...)")
    return doc


async def _event_stream(ws: Workspace, job_id: str) -> AsyncIterator[bytes]:
    """Each event once, as it is written; [DONE] after the job has ended and its last events are sent."""
    sent = 0
    while True:
        ended = (await asyncio.to_thread(ws.jobs.get, job_id)).status.is_terminal
        found = await asyncio.to_thread(ws.jobs.events, job_id)
        for event in found[sent:]:
            yield sse.event(JobEvent.model_validate(event))
        sent = len(found)
        if ended:
            yield sse.DONE
            return
        await asyncio.sleep(EVENT_POLL_S)
