"""The store interfaces, one per domain, and the page every ``list_*`` returns. Services depend on these, not on SQLite.

``SqliteStore`` implements all of them; a service asks for the narrowest one it needs (the runner a ``JobStore``, the
registry a ``ModelStore``, the gateway an ``EndpointStore``), as MLflow splits its tracking and registry stores.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol, TypeVar

from chattune.entities import ComputeTarget, Deployment, Endpoint, Job, ModelVersion, StepRun, UserModel

T = TypeVar("T")


class Page(list[T]):
    """One page of a list call: the items themselves (it is a list), and the cursor to the next page.

    As MLflow's ``PagedList``: code that only iterates a list keeps working, and a caller that pages reads
    ``has_more`` and passes ``next_cursor`` as ``after`` to get the next page.

    Attributes:
        next_cursor: The id to pass as ``after`` for the next page; None on the last page.
    """

    def __init__(self, items: Iterable[T] = (), next_cursor: str | None = None) -> None:
        super().__init__(items)
        self.next_cursor = next_cursor

    @property
    def items(self) -> list[T]:
        """The page's items, as a plain list."""
        return list(self)

    @property
    def has_more(self) -> bool:
        """Whether another page follows this one."""
        return self.next_cursor is not None


class JobStore(Protocol):
    """Jobs and their steps."""

    def create_job(self, job: Job) -> None:
        """Insert a new job with its steps; ConflictError if the id exists."""

    def get_job(self, job_id: str) -> Job:
        """The job with its steps; NotFoundError if there is none."""

    def list_jobs(self, *, limit: int = 50, after: str | None = None) -> Page[Job]:
        """Jobs, newest first, ``limit`` at a time, after the job ``after``."""

    def update_job(self, job_id: str, **fields: Any) -> Job:
        """Change some of a job's fields; returns the job as stored."""

    def save_step(self, step: StepRun) -> None:
        """Insert or replace a step run, keeping its position in the job."""

    def list_steps(self, job_id: str) -> Page[StepRun]:
        """A job's steps, in pipeline order."""

    def find_cached_step(self, name: str, cache_key: str) -> StepRun | None:
        """The latest succeeded step with this name and cache key, or None."""


class ImportStore(Protocol):
    """Base model imports: a source key (catalog name, directory) to the content hash of its weights."""

    def record_import(self, source_key: str, content_hash: str, path: str) -> None:
        """Remember that ``source_key``'s weights are at ``path`` with this content hash."""

    def find_import(self, source_key: str) -> tuple[str, str] | None:
        """(content hash, path) of an imported source, or None."""


class UserModelStore(Protocol):
    """The workspace's own catalog entries: models imported with ``models import NAME --from SOURCE``."""

    def save_user_model(self, model: UserModel) -> None:
        """Insert the entry, or replace the one of the same name."""

    def find_user_model(self, name: str) -> UserModel | None:
        """The entry ``name`` (exactly, else case-insensitively), or None."""

    def list_user_models(self) -> Page[UserModel]:
        """Every entry, oldest first."""


class ModelStore(Protocol):
    """The registry: model versions and their aliases."""

    def add_model_version(self, mv: ModelVersion) -> None:
        """Insert a registered version; ConflictError if it exists."""

    def get_model_version(self, name: str, version: str | None = None) -> ModelVersion:
        """A version, or the latest of ``name`` without one; NotFoundError if there is none."""

    def list_model_versions(self, name: str | None = None) -> Page[ModelVersion]:
        """Registered versions (of ``name``, or all), oldest first."""

    def delete_model_version(self, name: str, version: str) -> None:
        """Remove a version and the aliases that point to it."""

    def update_model_version(self, name: str, version: str, **fields: Any) -> ModelVersion:
        """Change some of a version's fields; returns it as stored."""

    def set_alias(self, name: str, alias: str, version: str) -> None:
        """Point ``name@alias`` at ``version``."""

    def delete_alias(self, name: str, alias: str) -> None:
        """Remove ``name@alias``."""

    def aliases(self, name: str) -> dict[str, str]:
        """``{alias: version}`` of one registered model."""

    def deployments_using(self, name: str, version: str) -> list[Deployment]:
        """The deployments that serve this version (as their model or an extra model)."""


class EndpointStore(Protocol):
    """Endpoints, their key hashes and their deployments."""

    def create_endpoint(self, ep: Endpoint, key_hashes: dict[str, str]) -> None:
        """Insert an endpoint with its key hashes; ConflictError if the name is taken."""

    def get_endpoint(self, name: str) -> Endpoint:
        """The endpoint; NotFoundError if there is none."""

    def list_endpoints(self) -> Page[Endpoint]:
        """Endpoints, oldest first."""

    def update_endpoint(self, name: str, **fields: Any) -> Endpoint:
        """Change some of an endpoint's fields; returns it as stored."""

    def delete_endpoint(self, name: str) -> None:
        """Remove an endpoint with its keys and deployments."""

    def set_key_hash(self, endpoint: str, key_type: str, key_hash: str) -> None:
        """Store the hash of one of the endpoint's keys (``primary`` or ``secondary``)."""

    def key_hashes(self, endpoint: str) -> dict[str, str]:
        """``{key_type: hash}`` of the endpoint's keys."""

    def create_deployment(self, dep: Deployment) -> None:
        """Insert a deployment; ConflictError if the endpoint has one of this name."""

    def get_deployment(self, endpoint: str, name: str) -> Deployment:
        """The deployment; NotFoundError if there is none."""

    def list_deployments(self, endpoint: str) -> Page[Deployment]:
        """An endpoint's deployments, oldest first."""

    def update_deployment(self, endpoint: str, name: str, **fields: Any) -> Deployment:
        """Change some of a deployment's fields; returns it as stored."""

    def delete_deployment(self, endpoint: str, name: str) -> None:
        """Remove a deployment."""


class ComputeStore(Protocol):
    """Named compute targets (Ray clusters); ``local`` is built in and not stored."""

    def add_compute_target(self, target: ComputeTarget) -> None:
        """Insert a target; ConflictError if the name is taken."""

    def get_compute_target(self, name: str) -> ComputeTarget:
        """The target; NotFoundError if there is none."""

    def list_compute_targets(self) -> Page[ComputeTarget]:
        """Targets, oldest first."""

    def delete_compute_target(self, name: str) -> None:
        """Remove a target; NotFoundError if there is none."""


class Store(JobStore, ImportStore, UserModelStore, ModelStore, EndpointStore, ComputeStore, Protocol):
    """The whole workspace database: every domain's interface."""
