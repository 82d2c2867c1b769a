"""The workspace's answers as typed documents (chattune.schemas), built one way for every surface.

The CLI's ``--json``, the SDK and the studio's REST API (chattune.studio) all answer with these, so a job, a model
or an endpoint has one wire shape wherever it is read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from chattune.schemas import (
    CatalogEntrySummary,
    DeploymentList,
    DeploymentPublic,
    EndpointList,
    EndpointPublic,
    JobList,
    JobPublic,
    JobSummary,
    ModelList,
    ModelVersionDetail,
    ModelVersionPublic,
    RegisteredModelSummary,
)

if TYPE_CHECKING:
    from chattune.workspace import Workspace


def model_list(ws: Workspace) -> ModelList:
    """Catalog entries and registered model versions with their aliases (``models list``)."""
    versions = ws.registry.list_versions()
    aliases: dict[tuple[str, str], list[str]] = {}
    for name in {v.name for v in versions}:
        for alias, version in ws.registry.aliases(name).items():
            aliases.setdefault((name, version), []).append(alias)
    return ModelList(
        catalog=[
            CatalogEntrySummary.model_validate(
                {**e.model_dump(), "id": e.id, "source": e.origin, "weights": e.source.kind}
            )
            for e in ws.catalog.list()
        ],
        registered=[
            RegisteredModelSummary.model_validate({**v.to_dict(), "aliases": aliases.get((v.name, v.version), [])})
            for v in versions
        ],
    )


def model_version(ws: Workspace, ref: str) -> ModelVersionDetail:
    """A registered version with its lineage, its name's versions and aliases (``models show NAME:VERSION``)."""
    registry = ws.registry
    mv = registry.get(ref)
    aliases = registry.aliases(mv.name)
    return ModelVersionDetail.model_validate(
        {
            **ModelVersionPublic.from_version(mv).model_dump(),
            "aliases": sorted(a for a, v in aliases.items() if v == mv.version),
            "all_aliases": aliases,
            "versions": [v.version for v in registry.list_versions(mv.name)],
        }
    )


def job_page(ws: Workspace, limit: int, after: str | None) -> JobList:
    """Jobs, newest first, a page at a time (``jobs list``)."""
    page = ws.jobs.list(limit=limit, after=after)
    return JobList(
        data=[JobSummary.from_job(j) for j in page.items], has_more=page.has_more, next_cursor=page.next_cursor
    )


def job(ws: Workspace, job_id: str) -> JobPublic:
    """A job with its steps, checkpoints, metrics and events (``jobs show``)."""
    return JobPublic.from_job(ws.jobs.get(job_id), ws.jobs.checkpoints(job_id), ws.jobs.events(job_id))


def endpoint_list(ws: Workspace) -> EndpointList:
    """Endpoints, oldest first (``endpoints list``)."""
    return EndpointList(
        [EndpointPublic.model_validate(ws.endpoints.describe(e)) for e in ws.endpoints.list_endpoints()]
    )


def endpoint(ws: Workspace, name: str) -> EndpointPublic:
    """An endpoint: state, URIs, traffic and deployments (``endpoints show``)."""
    return EndpointPublic.model_validate(ws.endpoints.describe(ws.endpoints.get(name)))


def deployment_list(ws: Workspace, endpoint_name: str) -> DeploymentList:
    """An endpoint's deployments with their instances (``deployments list``)."""
    return DeploymentList([DeploymentPublic.from_deployment(d) for d in ws.endpoints.list_deployments(endpoint_name)])
