"""The workspace's answers as typed documents (chattune.schemas), built one way for every surface.

The CLI's ``--json``, the SDK and the studio's REST API (chattune.studio) all answer with these, so a job, a model
or an endpoint has one wire shape wherever it is read.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from chattune.catalog import CatalogEntry
from chattune.data.chat_formats import ChatFormat, convert, file_format
from chattune.data.formats import iter_records
from chattune.data.validate import validate_file
from chattune.schemas import (
    CatalogEntryPublic,
    CatalogEntrySummary,
    DataFileReport,
    DataPreview,
    DataRow,
    DataValidation,
    DeploymentList,
    DeploymentPublic,
    EndpointList,
    EndpointPublic,
    JobList,
    JobPublic,
    JobSummary,
    MemoryEstimatePublic,
    ModelExportPublic,
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


def derived_values(entry: CatalogEntry) -> dict[str, Any]:
    """A user entry's derived values as shown: ``{name: {"value", "source"}}``."""
    return entry.derived.model_dump(mode="json") if entry.derived is not None else {}


def catalog_entry(ws: Workspace, entry: CatalogEntry) -> CatalogEntryPublic:
    """A catalog entry as ``models show`` answers it: its derived values and the memory estimate, with sources."""
    estimate = MemoryEstimatePublic.model_validate(ws.compute.estimate(entry), from_attributes=True)
    derived = {
        **derived_values(entry),
        "memory_estimate": {
            "value": estimate.model_dump(mode="json"),
            "source": "chattune compute check's estimate with its defaults (LoRA, precision 32, 512 tokens, batch 1); "
            f"a job's: `chattune compute check --model {entry.name} -f JOB.yaml`",
        },
    }
    return CatalogEntryPublic.model_validate(
        {
            **entry.model_dump(exclude={"derived"}),
            "id": entry.id,
            "source": entry.origin,
            "weights": entry.source.model_dump(exclude_defaults=True),
            "derived": derived,
        }
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
            "deployments": sorted(f"{d.endpoint}/{d.name}" for d in ws.store.deployments_using(mv.name, mv.version)),
        }
    )


def model_export(
    ws: Workspace, ref: str, fmt: str, out: Path, dtype: str | None = None, quant: str | None = None
) -> ModelExportPublic:
    """Export a registered version (``models export``): what was written, file by file."""
    import dataclasses

    _, result = ws.registry.export(ref, fmt, out, dtype=dtype, quant=quant)
    return ModelExportPublic.model_validate(dataclasses.asdict(result))


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


def data_validation(
    ws: Workspace,
    files: list[Path],
    *,
    model: str | None = None,
    max_seq_length: int | None = None,
    min_rows: int = 1,
    fmt: ChatFormat | None = None,
    generation: bool = False,
    task: str = "chat_completion",
) -> DataValidation:
    """Every error and warning of each file, by line, field and code (``data validate``).

    With ``task`` ``preference`` the files are read as preference pairs (chattune.data.preferences).
    """
    counter = ws.data.token_counter(model, max_seq_length)
    if task == "preference":
        reports = ws.data.validate_preferences(files, min_rows=min_rows, counter=counter)
    else:
        reports = ws.data.validate(files, min_rows=min_rows, counter=counter, fmt=fmt, generation=generation)
    return DataValidation(
        files=[DataFileReport.model_validate(r.to_dict()) for r in reports], valid=all(r.valid for r in reports)
    )


def data_preview(
    ws: Workspace,
    file: Path,
    *,
    rows: int = 3,
    offset: int = 0,
    model: str | None = None,
    fmt: ChatFormat | None = None,
) -> DataPreview:
    """``rows`` conversations from the ``offset``-th row on, as messages, and the file's statistics (``data show``)."""
    report = validate_file(file, counter=ws.data.token_counter(model), fmt=fmt)
    ff = file_format(file, fmt)
    shown: list[DataRow] = []
    for index, rec in enumerate(iter_records(file)):
        if len(shown) >= rows:
            break
        if index < offset:
            continue
        converted = convert(rec.value, ff)[0] if rec.error is None else None
        messages = converted.messages() if converted else None
        shown.append(DataRow(line=rec.line, row=rec.value, messages=messages, error=rec.error))
    return DataPreview(
        path=str(file),
        format=report.format,
        format_source=report.format_source,
        rows=shown,
        stats=report.stats,
        valid=report.valid,
        errors=len(report.errors),
        warnings=len(report.warnings),
    )
