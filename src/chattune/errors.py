"""One coded error hierarchy for chattune.

Library code raises these and never prints or exits. The CLI maps ``exit_code`` to the process exit status and
prints ``message`` and ``remedy``; servers map ``http_status`` to the response status and answer in OpenAI's
error shape.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class ChattuneError(Exception):
    """Base of every error chattune raises on purpose.

    Attributes:
        code: A stable, machine-readable code (snake_case).
        message: What went wrong, with where (file:line, field, flag) when known.
        remedy: What the user can do about it.
        details: Extra structured data (for ``--json`` output and HTTP error bodies).
    """

    code = "internal_error"
    exit_code = 1
    http_status = 500

    def __init__(self, message: str, *, remedy: str | None = None, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        self.remedy = remedy
        self.details = details or {}

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.remedy:
            out["remedy"] = self.remedy
        if self.details:
            out["details"] = self.details
        return out


class UserError(ChattuneError):
    """The user's input is wrong: exit code 2, HTTP 400."""

    code = "invalid_input"
    exit_code = 2
    http_status = 400


class NotFoundError(UserError):
    code = "not_found"
    http_status = 404


class ConflictError(UserError):
    code = "conflict"
    http_status = 409


class AuthError(UserError):
    code = "invalid_api_key"
    http_status = 401


@dataclass(frozen=True)
class Problem:
    """One problem found while checking user input; many are collected before raising."""

    where: str
    message: str
    code: str = "invalid_value"

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


@dataclass
class ProblemList:
    problems: list[Problem] = field(default_factory=list)

    def add(self, where: str, message: str, code: str = "invalid_value") -> None:
        self.problems.append(Problem(where, message, code))

    def __bool__(self) -> bool:
        return bool(self.problems)


class ConfigError(UserError):
    """A job spec or other configuration has one or more problems; all are listed at once."""

    code = "invalid_config"

    def __init__(self, source: str, problems: list[Problem], *, remedy: str | None = None):
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(
            f"{source}: {len(problems)} problem(s):\n{lines}",
            remedy=remedy or "Fix the listed keys and run the command again.",
            details={"problems": [p.__dict__ for p in problems]},
        )
        self.problems = problems


class DataError(UserError):
    """A data file cannot be used; ``details['errors']`` lists every error found."""

    code = "invalid_data"


class ComputeError(UserError):
    """The model or configuration cannot run on this machine's compute."""

    code = "compute_unsupported"


class OfflineError(UserError):
    """Something needed a network resource (a model or dataset hub) that cannot be reached."""

    code = "offline"
    http_status = 503


class StepFailedError(ChattuneError):
    code = "step_failed"


class JobCancelledError(ChattuneError):
    """Raised inside a step when the user cancelled the job; the runner records it as cancelled, not failed."""

    code = "cancelled"


class StorageError(ChattuneError):
    """The workspace cannot be written (disk full, read-only, permissions): nothing half-written is kept."""

    code = "workspace_unwritable"
    http_status = 507
    REMEDY = (
        "Free disk space or make the workspace (CHATTUNE_HOME) writable, then run the command again; "
        "what it was writing was not kept."
    )

    def __init__(self, message: str, *, remedy: str | None = None, details: dict[str, Any] | None = None):
        super().__init__(message, remedy=remedy or self.REMEDY, details=details)

    @classmethod
    def from_os_error(cls, exc: OSError) -> StorageError:
        where = f" {exc.filename}" if exc.filename else ""
        return cls(f"cannot write{where}: {exc.strerror or exc}")


# errno names and database messages that mean "the workspace cannot take this write", as opposed to a bug.
STORAGE_ERRNOS = frozenset({"ENOSPC", "EDQUOT", "EROFS", "EACCES", "EPERM", "EFBIG", "ENOTDIR"})
STORAGE_MESSAGES = ("disk is full", "readonly database", "read-only", "unable to open database", "disk i/o error")


def storage_error(exc: BaseException) -> StorageError | None:
    """The StorageError behind ``exc`` when the workspace could not be written, at any depth of its cause chain
    (MLflow wraps SQLAlchemy, which wraps sqlite3); None for anything else."""
    import errno

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, StorageError):
            return current
        if isinstance(current, OSError) and errno.errorcode.get(current.errno or 0) in STORAGE_ERRNOS:
            return StorageError.from_os_error(current)
        if type(current).__name__ == "OperationalError":  # sqlite3's, or SQLAlchemy's around it (.orig)
            driver = getattr(current, "orig", None) or current
            if any(m in str(driver).lower() for m in STORAGE_MESSAGES):
                return StorageError(f"a workspace database: {driver}")
        current = current.__cause__ or current.__context__
    return None


class ServiceUnavailableError(ChattuneError):
    code = "service_unavailable"
    http_status = 503
