"""Response schemas: the one wire shape of every ``--json`` answer, the SDK's results and a future REST API.

Each is a pydantic model built from domain entities (``Schema.model_validate(entity.to_dict())``) and written with
``model_dump(mode="json")``. They sit beside the entities in the layers and import nothing above them.
"""

from chattune.schemas.base import ListPage, Schema
from chattune.schemas.cache import CacheEntryPublic, CachePublic
from chattune.schemas.compute import ComputeCheckPublic, ComputePublic, GpuPublic, MemoryEstimatePublic
from chattune.schemas.data import (
    DataDemo,
    DataDownload,
    DataFileReport,
    DataImport,
    DataImported,
    DataIssue,
    DataPreview,
    DataRow,
    DataSplit,
    DataValidation,
)
from chattune.schemas.endpoints import (
    DeploymentList,
    DeploymentPublic,
    EndpointCreated,
    EndpointKeys,
    EndpointList,
    EndpointPublic,
    ScoreAnswer,
)
from chattune.schemas.jobs import (
    CheckpointMetrics,
    CheckpointPublic,
    JobError,
    JobEvent,
    JobList,
    JobPublic,
    JobSummary,
    StepPublic,
)
from chattune.schemas.models import (
    CatalogEntryPublic,
    CatalogEntrySummary,
    DerivedValue,
    ModelAliasPublic,
    ModelImportPublic,
    ModelList,
    ModelTagsPublic,
    ModelVersionDetail,
    ModelVersionPublic,
    RegisteredModelSummary,
    UserModelImportPublic,
)
from chattune.schemas.quickstart import QuickstartResult

__all__ = [
    "CacheEntryPublic",
    "CachePublic",
    "CatalogEntryPublic",
    "CatalogEntrySummary",
    "CheckpointMetrics",
    "CheckpointPublic",
    "ComputeCheckPublic",
    "ComputePublic",
    "DataDemo",
    "DataDownload",
    "DataFileReport",
    "DataImport",
    "DataImported",
    "DataIssue",
    "DataPreview",
    "DataRow",
    "DataSplit",
    "DataValidation",
    "DeploymentList",
    "DeploymentPublic",
    "DerivedValue",
    "EndpointCreated",
    "EndpointKeys",
    "EndpointList",
    "EndpointPublic",
    "GpuPublic",
    "JobError",
    "JobEvent",
    "JobList",
    "JobPublic",
    "JobSummary",
    "ListPage",
    "MemoryEstimatePublic",
    "ModelAliasPublic",
    "ModelImportPublic",
    "ModelList",
    "ModelTagsPublic",
    "ModelVersionDetail",
    "ModelVersionPublic",
    "QuickstartResult",
    "RegisteredModelSummary",
    "Schema",
    "ScoreAnswer",
    "StepPublic",
    "UserModelImportPublic",
]
