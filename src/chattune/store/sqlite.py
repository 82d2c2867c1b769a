"""SQLite implementation of the store: WAL mode, JSON columns, driver errors turned into domain errors."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from dataclasses import fields as dc_fields
from pathlib import Path
from typing import Any

from chattune.entities import (
    ComputeKind,
    ComputeTarget,
    Deployment,
    Endpoint,
    Job,
    JobError,
    JobStatus,
    LocalRayCluster,
    ModelVersion,
    ProvisioningState,
    StepRun,
    StepStatus,
    UserModel,
)
from chattune.errors import ChattuneError, ConflictError, NotFoundError, StorageError, storage_error
from chattune.store.base import Page

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, display_name TEXT NOT NULL, experiment_name TEXT NOT NULL, model TEXT NOT NULL,
    status TEXT NOT NULL, created_at REAL NOT NULL, spec TEXT NOT NULL, resolved_config TEXT NOT NULL,
    started_at REAL, finished_at REAL, pid INTEGER, mlflow_run_id TEXT,
    outputs TEXT NOT NULL DEFAULT '{}', metrics TEXT NOT NULL DEFAULT '{}', error TEXT
);
CREATE TABLE IF NOT EXISTS steps (
    job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE, name TEXT NOT NULL, position INTEGER NOT NULL,
    status TEXT NOT NULL, started_at REAL, finished_at REAL, log_path TEXT, outputs TEXT NOT NULL DEFAULT '{}',
    error TEXT, mlflow_run_id TEXT, cache_key TEXT, reused_from TEXT, PRIMARY KEY (job_id, name)
);
CREATE INDEX IF NOT EXISTS steps_cache_key ON steps (cache_key);
CREATE TABLE IF NOT EXISTS model_imports (
    source_key TEXT PRIMARY KEY, content_hash TEXT NOT NULL, path TEXT NOT NULL, created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS user_models (
    name TEXT PRIMARY KEY, version TEXT NOT NULL, content_hash TEXT NOT NULL, path TEXT NOT NULL,
    source TEXT NOT NULL, derived TEXT NOT NULL DEFAULT '{}', created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS model_versions (
    name TEXT NOT NULL, version TEXT NOT NULL, created_at REAL NOT NULL, kind TEXT NOT NULL, path TEXT NOT NULL,
    base_model TEXT NOT NULL, base_model_hash TEXT NOT NULL, base_model_path TEXT NOT NULL, job_id TEXT,
    description TEXT NOT NULL DEFAULT '', tags TEXT NOT NULL DEFAULT '{}', lineage TEXT NOT NULL DEFAULT '{}',
    metrics TEXT NOT NULL DEFAULT '{}', mlflow_version TEXT, PRIMARY KEY (name, version)
);
CREATE TABLE IF NOT EXISTS endpoints (
    name TEXT PRIMARY KEY, auth_mode TEXT NOT NULL, state TEXT NOT NULL, created_at REAL NOT NULL,
    description TEXT NOT NULL DEFAULT '', traffic TEXT NOT NULL DEFAULT '{}', mirror_traffic TEXT NOT NULL DEFAULT '{}',
    port INTEGER, pid INTEGER
);
CREATE TABLE IF NOT EXISTS endpoint_keys (
    endpoint TEXT NOT NULL REFERENCES endpoints(name) ON DELETE CASCADE, key_type TEXT NOT NULL,
    key_hash TEXT NOT NULL, updated_at REAL NOT NULL, PRIMARY KEY (endpoint, key_type)
);
CREATE TABLE IF NOT EXISTS deployments (
    endpoint TEXT NOT NULL REFERENCES endpoints(name) ON DELETE CASCADE, name TEXT NOT NULL,
    model_name TEXT NOT NULL, model_version TEXT NOT NULL, state TEXT NOT NULL, created_at REAL NOT NULL,
    instance_count INTEGER NOT NULL, request_timeout_ms INTEGER NOT NULL,
    max_concurrent_requests_per_instance INTEGER NOT NULL, max_batch_size INTEGER, max_new_tokens_cap INTEGER,
    port INTEGER, pid INTEGER, log_path TEXT,
    probes TEXT NOT NULL DEFAULT '{}', instances TEXT NOT NULL DEFAULT '[]', extra_models TEXT NOT NULL DEFAULT '[]',
    autoscale TEXT, compute TEXT NOT NULL DEFAULT 'local', cpus_per_instance REAL,
    max_queue_wait_ms INTEGER, max_queue_length INTEGER, share_base_with TEXT, prefix_cache_mb INTEGER,
    PRIMARY KEY (endpoint, name)
);
CREATE TABLE IF NOT EXISTS compute_targets (
    name TEXT PRIMARY KEY, kind TEXT NOT NULL, address TEXT NOT NULL, created_at REAL NOT NULL, local_cluster TEXT,
    serve_port INTEGER
);
CREATE TABLE IF NOT EXISTS model_aliases (
    name TEXT NOT NULL, alias TEXT NOT NULL, version TEXT NOT NULL, updated_at REAL NOT NULL,
    PRIMARY KEY (name, alias)
);
"""

# Columns holding JSON, per table; everything else is stored as is.
_JSON = {
    "spec", "resolved_config", "outputs", "metrics", "error", "tags", "lineage", "traffic", "mirror_traffic",
    "probes", "instances", "extra_models", "source", "derived", "local_cluster",
    "autoscale",
}  # fmt: skip
# Columns added since a workspace was first created: (table, column, declaration).
_ADDED_COLUMNS = [
    ("steps", "cache_key", "TEXT"),
    ("steps", "reused_from", "TEXT"),
    ("model_versions", "mlflow_version", "TEXT"),
    ("deployments", "probes", "TEXT NOT NULL DEFAULT '{}'"),
    ("deployments", "instances", "TEXT NOT NULL DEFAULT '[]'"),
    ("deployments", "extra_models", "TEXT NOT NULL DEFAULT '[]'"),
    ("deployments", "max_batch_size", "INTEGER"),
    ("deployments", "max_new_tokens_cap", "INTEGER"),
    ("deployments", "autoscale", "TEXT"),
    ("deployments", "compute", "TEXT NOT NULL DEFAULT 'local'"),
    ("deployments", "cpus_per_instance", "REAL"),
    ("deployments", "max_queue_wait_ms", "INTEGER"),
    ("deployments", "share_base_with", "TEXT"),
    ("deployments", "max_queue_length", "INTEGER"),
    ("deployments", "prefix_cache_mb", "INTEGER"),
    ("compute_targets", "serve_port", "INTEGER"),
]


def _encode(key: str, value: Any) -> Any:
    if isinstance(value, JobError):
        return json.dumps(asdict(value))
    if key in _JSON:
        return None if value is None else json.dumps(value)
    if hasattr(value, "value"):  # enums
        return value.value
    return value


def _decode(row: sqlite3.Row) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in row.keys():  # noqa: SIM118 - sqlite3.Row has no __iter__ over keys
        value = row[key]
        out[key] = json.loads(value) if key in _JSON and value is not None else value
    return out


def _only(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in dc_fields(cls)}
    return {k: v for k, v in data.items() if k in names}


def _storage(path: Path, exc: sqlite3.Error) -> ChattuneError:
    """A driver error as a domain error: a full or read-only disk is the workspace's state, not a bug."""
    if storage_error(exc) is not None:
        if not os.access(path.parent, os.W_OK):  # WAL needs its -wal and -shm files beside the database
            return StorageError(f"the workspace {path.parent} is read-only or not writable (database: {exc})")
        return StorageError(f"workspace database {path}: {exc} (the change was rolled back)")
    return ChattuneError(f"workspace database {path}: {exc}")


class SqliteStore:
    """The workspace database. One connection per thread; WAL so that readers never block the writer."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        try:
            self._migrate()
            self._db.executescript(SCHEMA)  # executescript manages its own transaction
        except sqlite3.Error as exc:
            raise _storage(self.path, exc) from exc

    def _migrate(self) -> None:
        """Columns added since a workspace was created are added in place (SQLite has no IF NOT EXISTS for them)."""
        for table, column, declaration in _ADDED_COLUMNS:
            columns = {r[1] for r in self._db.execute(f"PRAGMA table_info({table})").fetchall()}
            if columns and column not in columns:
                self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")

    @property
    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA foreign_keys=ON")
            db.execute("PRAGMA busy_timeout=30000")
            self._local.db = db
        return db

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
            yield db
            db.execute("COMMIT")
        except sqlite3.IntegrityError as exc:
            db.execute("ROLLBACK")
            if "FOREIGN KEY" in str(exc):
                raise NotFoundError(f"refers to a row that does not exist: {exc}") from exc
            raise ConflictError(f"already exists: {exc}") from exc
        except sqlite3.Error as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise _storage(self.path, exc) from exc
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        try:
            return [_decode(r) for r in self._db.execute(sql, args).fetchall()]
        except sqlite3.Error as exc:
            raise _storage(self.path, exc) from exc

    def _insert(self, table: str, data: dict[str, Any]) -> None:
        cols = ", ".join(data)
        marks = ", ".join("?" for _ in data)
        with self._tx() as db:
            db.execute(f"INSERT INTO {table} ({cols}) VALUES ({marks})", tuple(_encode(k, v) for k, v in data.items()))

    def _update(self, table: str, where: dict[str, Any], data: dict[str, Any]) -> None:
        sets = ", ".join(f"{k} = ?" for k in data)
        cond = " AND ".join(f"{k} = ?" for k in where)
        args = tuple(_encode(k, v) for k, v in data.items()) + tuple(where.values())
        with self._tx() as db:
            cur = db.execute(f"UPDATE {table} SET {sets} WHERE {cond}", args)
            if cur.rowcount == 0:
                raise NotFoundError(f"{table[:-1]} {'/'.join(map(str, where.values()))} not found")

    # jobs -----------------------------------------------------------------------------------------------------
    def create_job(self, job: Job) -> None:
        """Insert a new job with its steps; ConflictError if the id exists."""
        data = job.to_dict()
        data.pop("steps")
        self._insert("jobs", data)
        for i, step in enumerate(job.steps):
            self._save_step(step, i)

    def get_job(self, job_id: str) -> Job:
        """The job with its steps; NotFoundError if there is none."""
        rows = self._query("SELECT * FROM jobs WHERE id = ?", (job_id,))
        if not rows:
            raise NotFoundError(f"job {job_id!r} not found", remedy="List jobs with `chattune jobs list`.")
        return self._job(rows[0])

    def _job(self, row: dict[str, Any]) -> Job:
        row["status"] = JobStatus(row["status"])
        row["error"] = JobError(**row["error"]) if row["error"] else None
        job = Job(**_only(Job, row))
        job.steps = self.list_steps(job.id)
        return job

    def list_jobs(self, *, limit: int = 50, after: str | None = None) -> Page[Job]:
        """Jobs, newest first, ``limit`` at a time, after the job ``after``."""
        # Newest first, ordered by (created_at, id) so that equal timestamps never lose a job between pages.
        if after:
            created = self.get_job(after).created_at
            rows = self._query(
                "SELECT * FROM jobs WHERE created_at < ? OR (created_at = ? AND id < ?) "
                "ORDER BY created_at DESC, id DESC LIMIT ?",
                (created, created, after, limit + 1),
            )
        else:
            rows = self._query("SELECT * FROM jobs ORDER BY created_at DESC, id DESC LIMIT ?", (limit + 1,))
        items = [self._job(r) for r in rows[:limit]]
        return Page(items, items[-1].id if len(rows) > limit else None)

    def update_job(self, job_id: str, **fields: Any) -> Job:
        """Change some of a job's fields; returns the job as stored."""
        if isinstance(fields.get("error"), dict):  # checked on the way in: a job's error has one shape
            fields["error"] = JobError(**fields["error"])
        self._update("jobs", {"id": job_id}, fields)
        return self.get_job(job_id)

    def save_step(self, step: StepRun) -> None:
        """Insert or replace a step run, keeping its position in the job."""
        rows = self._query("SELECT position FROM steps WHERE job_id = ? AND name = ?", (step.job_id, step.name))
        position = rows[0]["position"] if rows else len(self.list_steps(step.job_id))
        self._save_step(step, position)

    def _save_step(self, step: StepRun, position: int) -> None:
        data = step.to_dict()
        data.pop("duration_s")
        data["position"] = position
        cols = ", ".join(data)
        marks = ", ".join("?" for _ in data)
        with self._tx() as db:
            db.execute(
                f"INSERT OR REPLACE INTO steps ({cols}) VALUES ({marks})",
                tuple(_encode(k, v) for k, v in data.items()),
            )

    def find_cached_step(self, name: str, cache_key: str) -> StepRun | None:
        """The latest succeeded step with this name and cache key, or None."""
        rows = self._query(
            "SELECT * FROM steps WHERE name = ? AND cache_key = ? AND status = ? ORDER BY finished_at DESC LIMIT 1",
            (name, cache_key, StepStatus.SUCCEEDED.value),
        )
        if not rows:
            return None
        rows[0]["status"] = StepStatus(rows[0]["status"])
        return StepRun(**_only(StepRun, rows[0]))

    def list_steps(self, job_id: str) -> Page[StepRun]:
        """A job's steps, in pipeline order."""
        rows = self._query("SELECT * FROM steps WHERE job_id = ? ORDER BY position", (job_id,))
        for r in rows:
            r["status"] = StepStatus(r["status"])
        return Page(StepRun(**_only(StepRun, r)) for r in rows)

    # model imports --------------------------------------------------------------------------------------------
    def record_import(self, source_key: str, content_hash: str, path: str) -> None:
        """Remember that ``source_key``'s weights are at ``path`` with this content hash."""
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO model_imports VALUES (?, ?, ?, ?)",
                (source_key, content_hash, path, time.time()),
            )

    def find_import(self, source_key: str) -> tuple[str, str] | None:
        """(content hash, path) of an imported source, or None."""
        rows = self._query("SELECT content_hash, path FROM model_imports WHERE source_key = ?", (source_key,))
        return (rows[0]["content_hash"], rows[0]["path"]) if rows else None

    # user models (the workspace's catalog entries) --------------------------------------------------------------
    def save_user_model(self, model: UserModel) -> None:
        """Insert the entry, or replace the one of the same name."""
        data = model.to_dict()
        cols = ", ".join(data)
        marks = ", ".join("?" for _ in data)
        with self._tx() as db:
            db.execute(
                f"INSERT OR REPLACE INTO user_models ({cols}) VALUES ({marks})",
                tuple(_encode(k, v) for k, v in data.items()),
            )

    def find_user_model(self, name: str) -> UserModel | None:
        """The entry ``name`` (exactly, else case-insensitively), or None."""
        rows = self._query("SELECT * FROM user_models WHERE name = ?", (name,)) or self._query(
            "SELECT * FROM user_models WHERE lower(name) = lower(?) ORDER BY name LIMIT 1", (name,)
        )
        return UserModel(**_only(UserModel, rows[0])) if rows else None

    def list_user_models(self) -> Page[UserModel]:
        """Every entry, oldest first."""
        rows = self._query("SELECT * FROM user_models ORDER BY created_at, name")
        return Page(UserModel(**_only(UserModel, r)) for r in rows)

    # registry -------------------------------------------------------------------------------------------------
    def add_model_version(self, mv: ModelVersion) -> None:
        """Insert a registered version; ConflictError if it exists."""
        try:
            self._insert("model_versions", mv.to_dict())
        except ConflictError as exc:
            raise ConflictError(
                f"model {mv.name} version {mv.version} already exists",
                remedy="Pick another --version, or leave it out to get the next one.",
            ) from exc

    def get_model_version(self, name: str, version: str | None = None) -> ModelVersion:
        """A version, or the latest of ``name`` without one; NotFoundError if there is none."""
        if version is None:
            rows = self._query("SELECT * FROM model_versions WHERE name = ? ORDER BY created_at DESC LIMIT 1", (name,))
        else:
            rows = self._query("SELECT * FROM model_versions WHERE name = ? AND version = ?", (name, version))
        if not rows:
            what = f"{name}:{version}" if version else name
            raise NotFoundError(f"registered model {what!r} not found", remedy="See `chattune models list`.")
        return ModelVersion(**_only(ModelVersion, rows[0]))

    def list_model_versions(self, name: str | None = None) -> Page[ModelVersion]:
        """Registered versions (of ``name``, or all by name), oldest first."""
        if name:
            rows = self._query("SELECT * FROM model_versions WHERE name = ? ORDER BY created_at", (name,))
        else:
            rows = self._query("SELECT * FROM model_versions ORDER BY name, created_at")
        return Page(ModelVersion(**_only(ModelVersion, r)) for r in rows)

    def delete_model_version(self, name: str, version: str) -> None:
        """Remove a version and the aliases that point to it."""
        with self._tx() as db:
            db.execute("DELETE FROM model_aliases WHERE name = ? AND version = ?", (name, version))
            db.execute("DELETE FROM model_versions WHERE name = ? AND version = ?", (name, version))

    def update_model_version(self, name: str, version: str, **fields: Any) -> ModelVersion:
        """Change some of a version's fields; returns it as stored."""
        self._update("model_versions", {"name": name, "version": version}, fields)
        return self.get_model_version(name, version)

    def set_alias(self, name: str, alias: str, version: str) -> None:
        """Point ``name@alias`` at ``version``."""
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO model_aliases VALUES (?, ?, ?, ?)", (name, alias, version, time.time()))

    def delete_alias(self, name: str, alias: str) -> None:
        """Remove ``name@alias``."""
        with self._tx() as db:
            db.execute("DELETE FROM model_aliases WHERE name = ? AND alias = ?", (name, alias))

    def aliases(self, name: str) -> dict[str, str]:
        """{alias: version} for one registered model."""
        rows = self._query("SELECT alias, version FROM model_aliases WHERE name = ? ORDER BY alias", (name,))
        return {r["alias"]: r["version"] for r in rows}

    def deployments_using(self, name: str, version: str) -> list[Deployment]:
        """The deployments that serve this version (as their model or an extra model)."""
        rows = self._query("SELECT * FROM deployments ORDER BY endpoint, name")
        found = [self._deployment(r) for r in rows]
        ref = f"{name}:{version}"
        return [d for d in found if (d.model_name, d.model_version) == (name, version) or ref in (d.extra_models or [])]

    # endpoints ------------------------------------------------------------------------------------------------
    def create_endpoint(self, ep: Endpoint, key_hashes: dict[str, str]) -> None:
        """Insert an endpoint with its key hashes; ConflictError if the name is taken."""
        try:
            self._insert("endpoints", ep.to_dict())
        except ConflictError as exc:
            raise ConflictError(
                f"endpoint {ep.name!r} already exists", remedy="Choose another name or delete the old endpoint."
            ) from exc
        for key_type, key_hash in key_hashes.items():
            self.set_key_hash(ep.name, key_type, key_hash)

    def _endpoint(self, row: dict[str, Any]) -> Endpoint:
        row["state"] = ProvisioningState(row["state"])
        return Endpoint(**_only(Endpoint, row))

    def get_endpoint(self, name: str) -> Endpoint:
        """The endpoint; NotFoundError if there is none."""
        rows = self._query("SELECT * FROM endpoints WHERE name = ?", (name,))
        if not rows:
            raise NotFoundError(f"endpoint {name!r} not found", remedy="See `chattune endpoints list`.")
        return self._endpoint(rows[0])

    def list_endpoints(self) -> Page[Endpoint]:
        """Endpoints, oldest first."""
        return Page(self._endpoint(r) for r in self._query("SELECT * FROM endpoints ORDER BY created_at"))

    def update_endpoint(self, name: str, **fields: Any) -> Endpoint:
        """Change some of an endpoint's fields; returns it as stored."""
        self._update("endpoints", {"name": name}, fields)
        return self.get_endpoint(name)

    def delete_endpoint(self, name: str) -> None:
        """Remove an endpoint with its keys and deployments."""
        with self._tx() as db:
            db.execute("DELETE FROM endpoints WHERE name = ?", (name,))

    def set_key_hash(self, endpoint: str, key_type: str, key_hash: str) -> None:
        """Store the hash of one of the endpoint's keys (``primary`` or ``secondary``)."""
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO endpoint_keys VALUES (?, ?, ?, ?)", (endpoint, key_type, key_hash, time.time())
            )

    def key_hashes(self, endpoint: str) -> dict[str, str]:
        """``{key_type: hash}`` of the endpoint's keys."""
        rows = self._query("SELECT key_type, key_hash FROM endpoint_keys WHERE endpoint = ?", (endpoint,))
        return {r["key_type"]: r["key_hash"] for r in rows}

    # deployments ----------------------------------------------------------------------------------------------
    def create_deployment(self, dep: Deployment) -> None:
        """Insert a deployment; ConflictError if the endpoint has one of this name."""
        try:
            self._insert("deployments", dep.to_dict())
        except ConflictError as exc:
            raise ConflictError(
                f"deployment {dep.name!r} already exists on endpoint {dep.endpoint!r}",
                remedy="Choose another --name or delete the old deployment.",
            ) from exc

    def _deployment(self, row: dict[str, Any]) -> Deployment:
        row["state"] = ProvisioningState(row["state"])
        return Deployment(**_only(Deployment, row))

    def get_deployment(self, endpoint: str, name: str) -> Deployment:
        """The deployment; NotFoundError if there is none."""
        rows = self._query("SELECT * FROM deployments WHERE endpoint = ? AND name = ?", (endpoint, name))
        if not rows:
            raise NotFoundError(
                f"deployment {name!r} not found on endpoint {endpoint!r}",
                remedy=f"See `chattune deployments list --endpoint {endpoint}`.",
            )
        return self._deployment(rows[0])

    def list_deployments(self, endpoint: str) -> Page[Deployment]:
        """An endpoint's deployments, oldest first."""
        rows = self._query("SELECT * FROM deployments WHERE endpoint = ? ORDER BY created_at", (endpoint,))
        return Page(self._deployment(r) for r in rows)

    def update_deployment(self, endpoint: str, name: str, **fields: Any) -> Deployment:
        """Change some of a deployment's fields; returns it as stored."""
        self._update("deployments", {"endpoint": endpoint, "name": name}, fields)
        return self.get_deployment(endpoint, name)

    def delete_deployment(self, endpoint: str, name: str) -> None:
        """Remove a deployment."""
        with self._tx() as db:
            db.execute("DELETE FROM deployments WHERE endpoint = ? AND name = ?", (endpoint, name))

    # compute targets --------------------------------------------------------------------------------------------
    def add_compute_target(self, target: ComputeTarget) -> None:
        """Insert a target; ConflictError if the name is taken."""
        data = target.to_dict()
        try:
            self._insert("compute_targets", data)
        except ConflictError as exc:
            raise ConflictError(
                f"compute target {target.name!r} already exists",
                remedy=f"Pick another name, or remove it first with `chattune compute remove {target.name}`.",
            ) from exc

    def get_compute_target(self, name: str) -> ComputeTarget:
        """The target; NotFoundError (naming the targets there are) if there is none."""
        rows = self._query("SELECT * FROM compute_targets WHERE name = ?", (name,))
        if not rows:
            known = ["local", *(r["name"] for r in self._query("SELECT name FROM compute_targets ORDER BY created_at"))]
            raise NotFoundError(
                f"compute target {name!r} not found; known targets: {', '.join(known)}",
                remedy="Add it with `chattune compute add NAME --ray-address ADDRESS` or "
                "`chattune compute start-ray NAME`.",
            )
        return self._compute_target(rows[0])

    def _compute_target(self, row: dict[str, Any]) -> ComputeTarget:
        row["kind"] = ComputeKind(row["kind"])
        row["local_cluster"] = LocalRayCluster(**row["local_cluster"]) if row["local_cluster"] else None
        return ComputeTarget(**_only(ComputeTarget, row))

    def list_compute_targets(self) -> Page[ComputeTarget]:
        """Targets, oldest first."""
        rows = self._query("SELECT * FROM compute_targets ORDER BY created_at, name")
        return Page(self._compute_target(r) for r in rows)

    def delete_compute_target(self, name: str) -> None:
        """Remove a target; NotFoundError if there is none."""
        self.get_compute_target(name)
        with self._tx() as db:
            db.execute("DELETE FROM compute_targets WHERE name = ?", (name,))
