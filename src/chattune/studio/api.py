"""``/api/v1``: the studio's REST control plane over the workspace's services.

Every answer is the typed document the CLI prints with ``--json`` (chattune.workspace.documents, chattune.schemas);
errors are the one error shape of chattune's servers. Routes are thin: parse, call the service, return the document.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import httpx
import yaml
from fastapi import FastAPI, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import PlainTextResponse, StreamingResponse
from pydantic import BaseModel, Field

from chattune import compute as compute_lib
from chattune import processes
from chattune.endpoints.config import deployment_settings
from chattune.endpoints.routing import DEPLOYMENT_HEADER
from chattune.entities import LOCAL_COMPUTE
from chattune.errors import AuthError, BadGatewayError, NotFoundError, UserError
from chattune.schemas import (
    ComputePublic,
    DataPreview,
    DataValidation,
    DeploymentList,
    DeploymentPublic,
    EndpointCreated,
    EndpointKeys,
    EndpointList,
    EndpointPublic,
    JobEvent,
    JobList,
    JobPublic,
    JobSummary,
    ModelAliasPublic,
    ModelExportPublic,
    ModelList,
    ModelTagsPublic,
    ModelVersionDetail,
    ModelVersionPublic,
)
from chattune.serving import sse
from chattune.serving.errors import documented_errors
from chattune.studio.auth import Sessions, close_session, open_session
from chattune.studio.datasets import DATASET_NAME, dataset_path
from chattune.studio.token import StudioToken
from chattune.workspace import Workspace, documents

# How often a job's event stream looks for new events.
EVENT_POLL_S = 0.5
# How long an ended job's runner may take to write its last events and exit.
RUNNER_EXIT_S = 10.0
AUDIT_FILE = "studio-audit.jsonl"
log = logging.getLogger("chattune.studio")
PREFIX = "/api/v1"
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml")


# What the path parameters may hold, stated in the OpenAPI document (anything else: a 422 naming the parameter).
REF_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}([:@][A-Za-z0-9_][A-Za-z0-9._-]{0,63})?$"
Ref = Annotated[str, PathParam(pattern=REF_PATTERN)]
JobId = Annotated[str, PathParam(pattern=r"^ftjob-[A-Za-z0-9]{1,64}$")]
Name = Annotated[str, PathParam(pattern=r"^[A-Za-z][A-Za-z0-9-]{1,30}[A-Za-z0-9]$")]
FileName = Annotated[str, PathParam(pattern=f"^{DATASET_NAME.pattern}$")]


class Login(BaseModel):
    """``POST /api/v1/session``: the studio token, exchanged for a session cookie."""

    model_config = {"extra": "forbid"}

    token: str = Field(min_length=1)


class EndpointCreate(BaseModel):
    """``POST /api/v1/endpoints``."""

    model_config = {"extra": "forbid"}

    name: str
    description: str = ""


class DeploymentCreate(BaseModel):
    """``POST /api/v1/endpoints/{name}/deployments``: the flags of ``deployments create`` as fields."""

    model_config = {"extra": "forbid"}

    name: str
    model: str = Field(description="registered NAME:VERSION or NAME@ALIAS")
    settings: dict[str, Any] = Field(default_factory=dict, description="DeploymentSettings fields")
    extra_models: list[str] = []
    compute: str = LOCAL_COMPUTE
    share_base_with: str | None = None


class ModelRegister(BaseModel):
    """``POST /api/v1/models``: register a succeeded job's model."""

    model_config = {"extra": "forbid"}

    job: str
    name: str | None = None
    version: str | None = None


class ModelExport(BaseModel):
    """``POST /api/v1/models/{ref}/export``: ``models export``'s options; ``out`` a new folder on this machine."""

    model_config = {"extra": "forbid"}

    format: Literal["hf", "gguf"]
    out: str = Field(min_length=1, description="An absolute path on the studio's machine: a new or empty folder.")
    dtype: Literal["f32", "f16", "bf16"] | None = None
    quant: Literal["q8_0"] | None = None


class DeploymentScale(BaseModel):
    """``PATCH /api/v1/endpoints/{name}/deployments/{deployment}``: ``deployments update --instances``."""

    model_config = {"extra": "forbid"}

    instance_count: int = Field(ge=1, description="The new number of instances (the deployment settings bound it).")


class AliasSet(BaseModel):
    """``PUT /api/v1/models/{name}/aliases/{alias}``."""

    model_config = {"extra": "forbid"}

    version: str


def add_api(app: FastAPI, ws: Workspace, token: StudioToken, sessions: Sessions) -> None:
    """Add the ``/api/v1`` routes over workspace ``ws`` to ``app``."""

    # session ---------------------------------------------------------------------------------------------------
    @app.post(PREFIX + "/session", status_code=204, responses=documented_errors(400, 401, 403, 415, 422))
    async def login(body: Login) -> Response:
        """Open a browser session: an HttpOnly, SameSite=Strict cookie for the studio's pages."""
        if not token.accepts(body.token):
            raise AuthError("that is not the studio token", remedy="`chattune studio --rotate-token` makes a new one")
        answer = Response(status_code=204)
        open_session(answer, sessions, body.token)
        return answer

    @app.delete(PREFIX + "/session", status_code=204)
    async def logout(request: Request) -> Response:
        """End this browser's session."""
        answer = Response(status_code=204)
        close_session(answer, sessions, request.headers)
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
    async def model(ref: Ref) -> ModelVersionDetail:
        """A registered version (NAME:VERSION or NAME@ALIAS) with its lineage."""
        try:
            return documents.model_version(ws, ref)
        except NotFoundError:
            raise
        except UserError as exc:  # a reference no version can have (``..``, a reserved alias): there is none
            raise NotFoundError(exc.message, remedy=exc.remedy) from exc

    @app.post(PREFIX + "/models", status_code=201, responses=documented_errors(400, 404, 409, 422))
    async def register(body: ModelRegister) -> ModelVersionPublic:
        """Register a succeeded job's trained model (``models register``)."""
        mv = await asyncio.to_thread(ws.registry.register, body.job, name=body.name, version=body.version)
        return ModelVersionPublic.from_version(mv)

    @app.post(PREFIX + "/models/{ref}/export", status_code=201, responses=documented_errors(400, 404, 409, 422))
    async def export(ref: Ref, body: ModelExport) -> ModelExportPublic:
        """Export a version (``models export``): a merged Hugging Face folder, or a GGUF file and an Ollama Modelfile.

        A LoRA version is merged into its base first.
        """
        out = Path(body.out)
        if not out.is_absolute():
            raise UserError(f"out {body.out!r} is not an absolute path", remedy="Give the folder's full path.")
        return await asyncio.to_thread(
            documents.model_export, ws, ref, body.format, out, dtype=body.dtype, quant=body.quant
        )

    @app.put(PREFIX + "/models/{name}/aliases/{alias}", responses=documented_errors(400, 404, 422))
    async def set_alias(name: str, alias: str, body: AliasSet) -> ModelAliasPublic:
        """Point NAME@ALIAS at a version (``models alias``)."""
        return ModelAliasPublic(
            name=name, alias=alias, version=ws.registry.set_alias(name, alias, body.version).version
        )

    @app.patch(PREFIX + "/models/{ref}/tags", responses=documented_errors(400, 404, 422))
    async def set_tags(ref: str, tags: dict[str, str]) -> ModelTagsPublic:
        """Add or change tags of a registered version (``models tag REF KEY=VALUE ...``)."""
        if not tags or any(not key for key in tags):
            raise UserError("tags: give at least one tag, each with a non-empty key", param="tags")
        mv = await asyncio.to_thread(ws.registry.set_tags, ref, tags)
        return ModelTagsPublic(id=mv.id, tags=mv.tags)

    # data ------------------------------------------------------------------------------------------------------
    @app.put(PREFIX + "/datasets/{filename}", responses=documented_errors(400, 413, 415))
    async def upload(filename: FileName, request: Request) -> DataValidation:
        """Store a data file in the workspace (``datasets/FILENAME``) and validate it: every error by line and code."""
        path = dataset_path(ws, filename)
        body = await request.body()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.part")
        tmp.write_bytes(body)
        tmp.replace(path)
        return await asyncio.to_thread(documents.data_validation, ws, [path])

    @app.get(PREFIX + "/datasets/{filename}", responses=documented_errors(400, 404))
    async def preview(
        filename: FileName,
        offset: Annotated[int, Query(ge=0)] = 0,
        rows: Annotated[int, Query(ge=0, le=100)] = 10,
        model: Annotated[str | None, Query(pattern=REF_PATTERN)] = None,
    ) -> DataPreview:
        """A page of a stored data file's conversations as messages, with its statistics (``data show``)."""
        path = dataset_path(ws, filename)
        if not path.exists():
            raise NotFoundError(f"no data file {filename!r} in the workspace", remedy="Upload it with PUT first.")
        return await asyncio.to_thread(documents.data_preview, ws, path, rows=rows, offset=offset, model=model)

    # jobs ------------------------------------------------------------------------------------------------------
    @app.get(PREFIX + "/jobs", responses=documented_errors(404))
    async def jobs(
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
        after: Annotated[str | None, Query(pattern=r"^ftjob-[A-Za-z0-9]{1,64}$")] = None,
    ) -> JobList:
        """Jobs, newest first, a page at a time."""
        return documents.job_page(ws, limit, after)

    @app.post(PREFIX + "/jobs", status_code=201, responses=documented_errors(400, 404, 422))
    async def create_job(request: Request) -> JobSummary:
        """Start a job from a job document: JSON, or the job YAML itself (Content-Type: application/yaml)."""
        spec = await _job_document(request)
        job, _warnings = await asyncio.to_thread(ws.jobs.create, spec)
        return JobSummary.from_job(job)

    @app.get(PREFIX + "/jobs/{job_id}", responses=documented_errors(404))
    async def job(job_id: JobId) -> JobPublic:
        """A job with its steps, checkpoints, metrics and events."""
        return documents.job(ws, job_id)

    @app.post(PREFIX + "/jobs/{job_id}/cancel", responses=documented_errors(404, 409))
    async def cancel(job_id: JobId) -> JobSummary:
        """Cancel a queued or running job."""
        return JobSummary.from_job(ws.jobs.cancel(job_id))

    @app.post(PREFIX + "/jobs/{job_id}/resume", responses=documented_errors(404, 409))
    async def resume(job_id: JobId) -> JobSummary:
        """Continue a failed or cancelled job from its last checkpoint."""
        return JobSummary.from_job(await asyncio.to_thread(ws.jobs.resume, job_id))

    @app.get(
        PREFIX + "/jobs/{job_id}/events",
        response_class=StreamingResponse,
        responses=_sse_responses("job events, then [DONE]"),
    )
    async def events(job_id: JobId) -> StreamingResponse:
        """The job's events as server-sent events (``fine_tuning.job.event``), live until the job ends."""
        ws.jobs.get(job_id)  # a 404 before the stream starts
        return StreamingResponse(_event_stream(ws, job_id), media_type=sse.MEDIA_TYPE)

    @app.get(
        PREFIX + "/jobs/{job_id}/logs",
        response_class=StreamingResponse,
        responses=_sse_responses('the job log, a line per event ({"line": ...}), then [DONE]'),
    )
    async def job_logs(job_id: JobId) -> StreamingResponse:
        """The job's log as server-sent events, from its first line, live until the job ends (``jobs stream``)."""
        ws.jobs.get(job_id)  # a 404 before the stream starts
        return StreamingResponse(_log_stream(ws, job_id), media_type=sse.MEDIA_TYPE)

    # endpoints -------------------------------------------------------------------------------------------------
    @app.get(PREFIX + "/endpoints")
    async def endpoints() -> EndpointList:
        """Endpoints, oldest first."""
        return documents.endpoint_list(ws)

    @app.get(PREFIX + "/endpoints/{name}", responses=documented_errors(404))
    async def endpoint(name: Name) -> EndpointPublic:
        """An endpoint: state, URIs, traffic and deployments."""
        return documents.endpoint(ws, name)

    @app.get(PREFIX + "/endpoints/{name}/deployments", responses=documented_errors(404))
    async def deployments(name: Name) -> DeploymentList:
        """An endpoint's deployments with their instances."""
        return documents.deployment_list(ws, name)

    @app.post(PREFIX + "/endpoints", status_code=201, responses=documented_errors(400, 409, 422))
    async def create_endpoint(body: EndpointCreate) -> EndpointCreated:
        """Create an endpoint and start its gateway; its two keys are in this answer only."""
        ep, keys = await asyncio.to_thread(ws.endpoints.create, body.name, body.description)
        return EndpointCreated.model_validate({**ws.endpoints.describe(ep), "keys": EndpointKeys.from_key_types(keys)})

    @app.delete(PREFIX + "/endpoints/{name}", status_code=204, responses=documented_errors(404))
    async def delete_endpoint(name: Name) -> Response:
        """Delete an endpoint, stopping its gateway and instances."""
        await asyncio.to_thread(ws.endpoints.delete, name)
        return Response(status_code=204)

    @app.put(PREFIX + "/endpoints/{name}/traffic", responses=documented_errors(400, 404, 422))
    async def traffic(name: Name, split: dict[str, int]) -> EndpointPublic:
        """Set the traffic split (it must sum to 0 or 100)."""
        return EndpointPublic.model_validate(ws.endpoints.describe(ws.endpoints.set_traffic(name, split)))

    @app.put(PREFIX + "/endpoints/{name}/mirror", responses=documented_errors(400, 404, 422))
    async def mirror(name: Name, split: dict[str, int]) -> EndpointPublic:
        """Mirror a share of live traffic to a deployment at 0% (at most 50%; 0 stops it)."""
        return EndpointPublic.model_validate(ws.endpoints.describe(ws.endpoints.set_mirror(name, split)))

    @app.post(PREFIX + "/endpoints/{name}/keys/{key_type}/regenerate", responses=documented_errors(400, 404))
    async def regenerate(
        name: Name, key_type: Annotated[str, PathParam(pattern="^(primary|secondary)$")]
    ) -> EndpointKeys:
        """Replace one key; the new value is in this answer only (the other key is not shown)."""
        new = await asyncio.to_thread(ws.endpoints.regenerate_key, name, key_type)
        return EndpointKeys.from_key_types({key_type: new})

    @app.post(PREFIX + "/endpoints/{name}/keys/reveal", responses=documented_errors(404))
    async def reveal(name: Name, request: Request) -> EndpointKeys:
        """Both keys as this workspace's client holds them: an explicit reveal, written to the audit log."""
        keys = ws.endpoints.keys(name)
        audit(ws, "endpoint keys revealed", endpoint=name, client=request.client.host if request.client else None)
        return EndpointKeys.from_key_types(keys)

    @app.post(
        PREFIX + "/endpoints/{name}/deployments", status_code=202, responses=documented_errors(400, 404, 409, 422)
    )
    async def deploy(name: Name, body: DeploymentCreate) -> DeploymentPublic:
        """Record a deployment; the gateway starts it (poll the deployment until it is Succeeded or Failed)."""
        dep = await asyncio.to_thread(
            ws.endpoints.deploy,
            name,
            body.name,
            body.model,
            deployment_settings(body.settings),
            extra_models=body.extra_models,
            compute=body.compute,
            share_base_with=body.share_base_with,
            wait=False,
        )
        return DeploymentPublic.from_deployment(dep)

    @app.patch(PREFIX + "/endpoints/{name}/deployments/{deployment}", responses=documented_errors(400, 404, 409, 422))
    async def scale(name: Name, deployment: Name, body: DeploymentScale) -> DeploymentPublic:
        """Scale a deployment to ``instance_count`` instances (``deployments update --instances``).

        Answers when every instance is ready.
        """
        dep = await asyncio.to_thread(ws.endpoints.scale, name, deployment, body.instance_count)
        return DeploymentPublic.from_deployment(dep)

    @app.delete(
        PREFIX + "/endpoints/{name}/deployments/{deployment}", status_code=204, responses=documented_errors(404, 409)
    )
    async def undeploy(name: Name, deployment: Name) -> Response:
        """Delete a deployment (it must receive no traffic)."""
        await asyncio.to_thread(ws.endpoints.delete_deployment, name, deployment)
        return Response(status_code=204)

    @app.post(PREFIX + "/endpoints/{name}/chat", response_model=None, responses=documented_errors(404, 502))
    async def chat(name: Name, request: Request, deployment: str | None = None) -> Response:
        """A chat completion through the endpoint's gateway with this workspace's key (the playground's call).

        The body is OpenAI's request, passed on as sent; ``deployment`` pins one (``azureml-model-deployment``). A
        streamed answer is relayed as it comes.
        """
        base = documents.endpoint(ws, name).openai_base_url
        keys = ws.endpoints.keys(name)
        headers = {"Authorization": f"Bearer {keys['primary']}", "Content-Type": "application/json"}
        if deployment:
            headers[DEPLOYMENT_HEADER] = deployment
        client = httpx.AsyncClient(timeout=httpx.Timeout(300, connect=10))
        try:
            upstream = await client.send(
                client.build_request("POST", f"{base}/chat/completions", content=await request.body(), headers=headers),
                stream=True,
            )
        except httpx.HTTPError as exc:  # the gateway is down or unreachable: a 502 that says so, not a 500
            await client.aclose()
            raise BadGatewayError(f"endpoint {name!r} is unreachable: {type(exc).__name__}") from exc

        async def relay() -> AsyncIterator[bytes]:
            try:
                async for part in upstream.aiter_raw():
                    yield part
            finally:
                await upstream.aclose()
                await client.aclose()

        media = upstream.headers.get("content-type", "application/json")
        return StreamingResponse(relay(), status_code=upstream.status_code, media_type=media)

    @app.get(
        PREFIX + "/endpoints/{name}/deployments/{deployment}/logs",
        response_model=None,
        responses={
            200: {"content": {"text/plain": {}}, "description": "the log's last lines"},
            **documented_errors(404),
        },
    )
    async def logs(name: Name, deployment: Name, lines: Annotated[int, Query(ge=1, le=5000)] = 200) -> Response:
        """The last lines of a deployment's log."""
        return PlainTextResponse(ws.endpoints.logs(name, deployment, lines))


def audit(ws: Workspace, what: str, **details: Any) -> None:
    """One line in the studio's audit log (``$CHATTUNE_HOME/studio-audit.jsonl``) and the server's log."""
    record = {"at": time.time(), "event": what, **details}
    log.warning("audit: %s", json.dumps(record))
    with (ws.settings.home / AUDIT_FILE).open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")


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


async def _follow(ws: Workspace, job_id: str, new: Callable[[bool], list[bytes]]) -> AsyncIterator[bytes]:
    """What ``new(ended)`` finds since its last call, until the job has ended; then [DONE].

    Once the job's status is final, its runner may still write its last lines: ``new`` reads after it has exited.
    """
    while True:
        job = await asyncio.to_thread(ws.jobs.get, job_id)
        ended = job.status.is_terminal
        if ended:  # the runner records the status, then writes its last lines: read them once it has exited
            deadline = time.monotonic() + RUNNER_EXIT_S
            while processes.alive(job.pid) and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
        for chunk in await asyncio.to_thread(new, ended):
            yield chunk
        if ended:
            yield sse.DONE
            return
        await asyncio.sleep(EVENT_POLL_S)


def _event_stream(ws: Workspace, job_id: str) -> AsyncIterator[bytes]:
    """Each event once, as it is written."""
    sent = 0

    def new(_ended: bool) -> list[bytes]:
        nonlocal sent
        found = ws.jobs.events(job_id)
        chunks = [sse.event(JobEvent.model_validate(event)) for event in found[sent:]]
        sent = len(found)
        return chunks

    return _follow(ws, job_id, new)


def _log_stream(ws: Workspace, job_id: str) -> AsyncIterator[bytes]:
    """Each whole line of the job log once, as it is written (what ``jobs stream`` prints)."""
    position = 0

    def new(ended: bool) -> list[bytes]:
        nonlocal position
        lines, position = ws.jobs.read_log(job_id, position, final=ended)
        return [sse.event({"line": line}) for line in lines]

    return _follow(ws, job_id, new)


def _sse_responses(description: str) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI answers of a job's server-sent stream: ``description`` as a stream, or a 404."""
    return {200: {"content": {sse.MEDIA_TYPE: {}}, "description": description}, **documented_errors(404)}
