"""One coded error hierarchy for chattune, and the one table that translates its codes at the edges.

Library code raises these and never prints or exits. Each class has a ``code``; ``ERROR_CODES`` maps every code to
its exit status (the CLI), its HTTP status and its OpenAI error ``type`` (the gateway and the instances, through
``chattune.serving.errors``). A class reads its ``exit_code`` and ``http_status`` from the table, so the CLI, the
servers and the table never disagree.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple


class ErrorCode(NamedTuple):
    """How one error code is answered at each edge.

    Attributes:
        exit_code: The CLI's exit status: 2 for the user's input, 1 for an operational failure.
        http_status: The status a server answers with.
        type: OpenAI's error ``type`` in the answer's body.
    """

    exit_code: int
    http_status: int
    type: str


_INVALID = "invalid_request_error"
_SERVER = "server_error"
_UNAVAILABLE = "service_unavailable_error"

ERROR_CODES: dict[str, ErrorCode] = {
    # The user's input (exit 2).
    "invalid_input": ErrorCode(2, 400, _INVALID),
    "invalid_config": ErrorCode(2, 400, _INVALID),
    "invalid_data": ErrorCode(2, 400, _INVALID),
    "compute_unsupported": ErrorCode(2, 400, _INVALID),
    "not_found": ErrorCode(2, 404, "not_found_error"),
    "conflict": ErrorCode(2, 409, _INVALID),
    "invalid_api_key": ErrorCode(2, 401, "authentication_error"),
    "cross_site_request": ErrorCode(2, 403, "permission_error"),
    "offline": ErrorCode(2, 503, _UNAVAILABLE),
    # Operational failures (exit 1): the machine, a process or the workspace, not the input.
    "internal_error": ErrorCode(1, 500, _SERVER),
    "step_failed": ErrorCode(1, 500, _SERVER),
    "cancelled": ErrorCode(1, 500, _SERVER),
    "workspace_unwritable": ErrorCode(1, 507, _SERVER),
    "service_unavailable": ErrorCode(1, 503, _UNAVAILABLE),
    "process_failed": ErrorCode(1, 500, _SERVER),
    "timeout": ErrorCode(1, 504, "timeout_error"),
    "unreachable": ErrorCode(1, 502, _SERVER),
    "dependency_too_old": ErrorCode(1, 500, _SERVER),
    # Answered by the servers only (an instance or a gateway), in OpenAI's error shape.
    "invalid_json": ErrorCode(2, 400, _INVALID),
    "invalid_request": ErrorCode(2, 422, _INVALID),
    "unsupported_media_type": ErrorCode(2, 415, _INVALID),
    "request_too_large": ErrorCode(2, 413, _INVALID),
    "deployment_not_found": ErrorCode(2, 404, "not_found_error"),
    "request_timeout": ErrorCode(1, 408, "timeout_error"),
    "too_many_requests": ErrorCode(1, 429, "rate_limit_error"),
    "no_traffic": ErrorCode(1, 503, _UNAVAILABLE),
    "not_ready": ErrorCode(1, 503, _UNAVAILABLE),
    "loading": ErrorCode(1, 503, _UNAVAILABLE),
    "load_failed": ErrorCode(1, 503, _UNAVAILABLE),
    "bad_gateway": ErrorCode(1, 502, _SERVER),
}

# OpenAI's error type for an HTTP status that no chattune code produced (e.g. Starlette's 405).
HTTP_TYPES: dict[int, str] = {
    400: _INVALID,
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: _INVALID,
    408: "timeout_error",
    413: _INVALID,
    415: _INVALID,
    422: _INVALID,
    429: "rate_limit_error",
    503: _UNAVAILABLE,
}


def error_type(http_status: int, code: str | None = None) -> str:
    """OpenAI's error ``type`` for an answer: the code's own when the table has it, else the status's.

    Args:
        http_status: The answer's status.
        code: The chattune error code, if any.

    Returns:
        The ``type`` field of OpenAI's error body.
    """
    if code in ERROR_CODES and ERROR_CODES[code].http_status == http_status:
        return ERROR_CODES[code].type
    return HTTP_TYPES.get(http_status, _INVALID if http_status < 500 else _SERVER)


class ChattuneError(Exception):
    """Base of every error chattune raises on purpose.

    Attributes:
        code: A stable, machine-readable code (snake_case), a key of ``ERROR_CODES``.
        exit_code: The CLI's exit status, from ``ERROR_CODES``.
        http_status: A server's answer status, from ``ERROR_CODES``.
        message: What went wrong, with where (file:line, field, flag) when known.
        remedy: What the user can do about it.
        details: Extra structured data (for ``--json`` output and HTTP error bodies).
    """

    code: ClassVar[str] = "internal_error"
    exit_code: ClassVar[int] = 1
    http_status: ClassVar[int] = 500

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        entry = ERROR_CODES[cls.code]  # a KeyError here: add the class's code to ERROR_CODES
        cls.exit_code, cls.http_status = entry.exit_code, entry.http_status

    def __init__(
        self,
        message: str,
        *,
        remedy: str | None = None,
        details: dict[str, Any] | None = None,
        param: str | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.remedy = remedy
        self.details = details or {}
        self.param = param  # the request field at fault, for a server's answer (OpenAI's error ``param``)

    def to_dict(self) -> dict[str, Any]:
        """The error as ``{"code", "message"}``, with ``remedy`` and ``details`` when given."""
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.remedy:
            out["remedy"] = self.remedy
        if self.details:
            out["details"] = self.details
        return out


class UserError(ChattuneError):
    """The user's input is wrong: exit code 2, HTTP 400."""

    code = "invalid_input"


class NotFoundError(UserError):
    """A named thing (job, model, endpoint, deployment) does not exist."""

    code = "not_found"


class ConflictError(UserError):
    """The thing exists already, or its state refuses the change."""

    code = "conflict"


class AuthError(UserError):
    """A missing or wrong key."""

    code = "invalid_api_key"


class CrossSiteError(UserError):
    """A state-changing request from another site riding on a browser's studio session."""

    code = "cross_site_request"


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
    """Problems collected while checking, so that all are reported at once; falsy while empty."""

    problems: list[Problem] = field(default_factory=list)

    def add(self, where: str, message: str, code: str = "invalid_value") -> None:
        """Record one problem at ``where`` (file:line, key)."""
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


class DependencyError(ChattuneError):
    """An installed library is older than what chattune's code uses (``chattune.versions``)."""

    code = "dependency_too_old"


class StepFailedError(ChattuneError):
    """A pipeline step failed."""

    code = "step_failed"


class JobCancelledError(ChattuneError):
    """Raised inside a step when the user cancelled the job; the runner records it as cancelled, not failed."""

    code = "cancelled"


class StorageError(ChattuneError):
    """The workspace cannot be written (disk full, read-only, permissions): nothing half-written is kept."""

    code = "workspace_unwritable"
    REMEDY = (
        "Free disk space or make the workspace (CHATTUNE_HOME) writable, then run the command again; "
        "what it was writing was not kept."
    )

    def __init__(self, message: str, *, remedy: str | None = None, details: dict[str, Any] | None = None):
        super().__init__(message, remedy=remedy or self.REMEDY, details=details)

    @classmethod
    def from_os_error(cls, exc: OSError) -> StorageError:
        """The error for a failed write, naming the file when the OS did."""
        where = f" {exc.filename}" if exc.filename else ""
        return cls(f"cannot write{where}: {exc.strerror or exc}")


# errno names and database messages that mean "the workspace cannot take this write", as opposed to a bug.
STORAGE_ERRNOS = frozenset({"ENOSPC", "EDQUOT", "EROFS", "EACCES", "EPERM", "EFBIG", "ENOTDIR"})
_RUST_OS_ERROR = re.compile(r"\(os error (\d+)\)")
STORAGE_MESSAGES = ("disk is full", "readonly database", "read-only", "unable to open database", "disk i/o error")


def storage_error(exc: BaseException) -> StorageError | None:
    """The StorageError behind ``exc`` when the workspace could not be written, else None.

    Looks at any depth of the cause chain (MLflow wraps SQLAlchemy, which wraps sqlite3).
    """
    import errno

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, StorageError):
            return current
        if isinstance(current, OSError) and errno.errorcode.get(current.errno or 0) in STORAGE_ERRNOS:
            return StorageError.from_os_error(current)
        rust = _RUST_OS_ERROR.search(str(current))  # Rust's io::Error (safetensors, tokenizers): "(os error 28)"
        if rust and errno.errorcode.get(int(rust.group(1))) in STORAGE_ERRNOS:
            code = int(rust.group(1))
            return StorageError.from_os_error(OSError(code, os.strerror(code)))
        if type(current).__name__ == "OperationalError":  # sqlite3's, or SQLAlchemy's around it (.orig)
            driver = getattr(current, "orig", None) or current
            if any(m in str(driver).lower() for m in STORAGE_MESSAGES):
                return StorageError(f"a workspace database: {driver}")
        current = current.__cause__ or current.__context__
    return None


class ServiceUnavailableError(ChattuneError):
    """A service chattune needs is not available now; trying again later may work."""

    code = "service_unavailable"


class ProcessError(ChattuneError):
    """A process chattune started (a gateway, an instance, a job) died or could not start (e.g. its port taken)."""

    code = "process_failed"


class WaitTimeoutError(ChattuneError):
    """Something chattune waits for (a server start, a deployment) was not ready in time."""

    code = "timeout"


class UnreachableError(ChattuneError):
    """A server chattune started cannot be reached over the network."""

    code = "unreachable"


# The answers only a server gives (an instance or a gateway): raised or answered through chattune.serving.errors.
class InvalidJSONError(UserError):
    """The request body is not JSON (or not UTF-8)."""

    code = "invalid_json"


class InvalidRequestError(UserError):
    """The request body does not match the route's schema."""

    code = "invalid_request"


class UnsupportedMediaTypeError(UserError):
    """The request body is not sent as JSON."""

    code = "unsupported_media_type"


class RequestTooLargeError(UserError):
    """The request body is over the server's size limit."""

    code = "request_too_large"


class DeploymentNotFoundError(NotFoundError):
    """The deployment a request names (``azureml-model-deployment``) is not on the endpoint."""

    code = "deployment_not_found"


class RequestTimeoutError(ChattuneError):
    """The deployment did not answer within its ``request_timeout_ms``."""

    code = "request_timeout"


class TooManyRequestsError(ChattuneError):
    """Every instance is at ``max_concurrent_requests_per_instance``."""

    code = "too_many_requests"


class NoTrafficError(ServiceUnavailableError):
    """No deployment of the endpoint receives traffic."""

    code = "no_traffic"


class NotReadyError(ServiceUnavailableError):
    """The deployment has no ready instance."""

    code = "not_ready"


class ModelLoadingError(ServiceUnavailableError):
    """The instance is still loading its model."""

    code = "loading"


class ModelLoadFailedError(ServiceUnavailableError):
    """The instance could not load its model."""

    code = "load_failed"


class BadGatewayError(ChattuneError):
    """No instance of the deployment could be reached, or one failed mid-answer."""

    code = "bad_gateway"
