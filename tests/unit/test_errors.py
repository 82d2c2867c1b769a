"""chattune.errors: codes, exit codes, HTTP statuses, and ConfigError listing every problem."""

from __future__ import annotations

import pytest

from chattune.errors import (
    AuthError,
    ChattuneError,
    ComputeError,
    ConfigError,
    ConflictError,
    DataError,
    NotFoundError,
    OfflineError,
    Problem,
    ProblemList,
    ServiceUnavailableError,
    StepFailedError,
    UserError,
)


@pytest.mark.parametrize(
    ("cls", "code", "exit_code", "http_status"),
    [
        (ChattuneError, "internal_error", 1, 500),
        (UserError, "invalid_input", 2, 400),
        (NotFoundError, "not_found", 2, 404),
        (ConflictError, "conflict", 2, 409),
        (AuthError, "invalid_api_key", 2, 401),
        (DataError, "invalid_data", 2, 400),
        (ComputeError, "compute_unsupported", 2, 400),
        (OfflineError, "offline", 2, 503),
        (StepFailedError, "step_failed", 1, 500),
        (ServiceUnavailableError, "service_unavailable", 1, 503),
    ],
)
def test_codes_exit_codes_and_http_statuses(
    cls: type[ChattuneError], code: str, exit_code: int, http_status: int
) -> None:
    err = cls("something went wrong")
    assert (err.code, err.exit_code, err.http_status) == (code, exit_code, http_status)
    assert isinstance(err, ChattuneError)
    assert str(err) == "something went wrong"


def test_user_errors_are_user_errors() -> None:
    for cls in (NotFoundError, ConflictError, AuthError, DataError, ComputeError, OfflineError):
        assert issubclass(cls, UserError)
    assert not issubclass(StepFailedError, UserError)


def test_to_dict_includes_remedy_and_details_only_when_given() -> None:
    assert ChattuneError("boom").to_dict() == {"code": "internal_error", "message": "boom"}
    err = NotFoundError("model 'x' not found", remedy="Use one of: a, b.", details={"name": "x"})
    assert err.to_dict() == {
        "code": "not_found",
        "message": "model 'x' not found",
        "remedy": "Use one of: a, b.",
        "details": {"name": "x"},
    }


def test_config_error_lists_every_problem() -> None:
    problems = [
        Problem("job.yaml:3: training.learning_rat", "unknown key; did you mean `learning_rate`?", "unknown_key"),
        Problem("job.yaml:7: optimization.lora_r", "must be > 0"),
        Problem("job.yaml: data.train", "required: the training file", "missing_key"),
    ]
    err = ConfigError("job.yaml", problems)
    assert err.problems == problems
    assert len(err.problems) == 3
    assert err.code == "invalid_config"
    assert err.exit_code == 2
    assert err.message.splitlines() == [
        "job.yaml: 3 problem(s):",
        "  - job.yaml:3: training.learning_rat: unknown key; did you mean `learning_rate`?",
        "  - job.yaml:7: optimization.lora_r: must be > 0",
        "  - job.yaml: data.train: required: the training file",
    ]
    assert err.remedy == "Fix the listed keys and run the command again."
    assert err.details["problems"][1] == {
        "where": "job.yaml:7: optimization.lora_r",
        "message": "must be > 0",
        "code": "invalid_value",
    }
    assert ConfigError("x", problems[:1], remedy="Do this.").remedy == "Do this."


def test_problem_list() -> None:
    found = ProblemList()
    assert not found
    found.add("a", "bad")
    found.add("b", "worse", "invalid_combination")
    assert found
    assert [str(p) for p in found.problems] == ["a: bad", "b: worse"]
    assert found.problems[1].code == "invalid_combination"


def test_every_coded_class_reads_the_one_table() -> None:
    import chattune.errors as errors

    classes = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, ChattuneError)]
    assert len(classes) > 20
    for cls in classes:
        entry = errors.ERROR_CODES[cls.code]
        assert (cls.exit_code, cls.http_status) == (entry.exit_code, entry.http_status), cls


@pytest.mark.parametrize(
    ("cls", "code", "exit_code"),
    [
        ("ProcessError", "process_failed", 1),
        ("WaitTimeoutError", "timeout", 1),
        ("UnreachableError", "unreachable", 1),
        ("StorageError", "workspace_unwritable", 1),
    ],
)
def test_operational_failures_have_codes_of_their_own(cls: str, code: str, exit_code: int) -> None:
    import chattune.errors as errors

    err = getattr(errors, cls)("it broke")
    assert (err.code, err.exit_code) == (code, exit_code)
    assert not isinstance(err, UserError)


def test_error_types_are_openai_s() -> None:
    from chattune.errors import error_type

    assert error_type(429, "too_many_requests") == "rate_limit_error"
    assert error_type(503, "loading") == "service_unavailable_error"
    assert error_type(409, "conflict") == "invalid_request_error"
    assert error_type(405) == "invalid_request_error"
    assert error_type(502, "bad_gateway") == "server_error"


def test_the_servers_answer_errors_through_coded_classes() -> None:
    """Gateway, instance and auth answer an error by naming its coded class (``coded_response``), so its status and
    type come from the one table; a literal status and code (``error_response(429, ..., "too_many_requests")``)
    appears nowhere outside serving/errors.py, which translates the table."""
    import ast
    from pathlib import Path

    import chattune

    root = Path(chattune.__file__).parent
    literal: list[str] = []
    coded = 0
    for path in [*root.joinpath("serving").rglob("*.py"), *root.joinpath("endpoints").rglob("*.py")]:
        if path.name == "errors.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "error_response":
                literal.append(f"{path.name}:{node.lineno}")
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("coded_response", "Refusal"):
                coded += 1
    assert coded >= 8 and not literal, literal


def test_a_full_disk_met_by_a_rust_library_is_a_storage_error() -> None:
    """safetensors (Rust) reports a full disk as its own error type whose text ends "(os error 28)": as clear an
    error as an OSError (seen in a full-disk registration that failed while saving merged weights)."""
    from chattune.errors import StorageError, storage_error

    class SafetensorError(Exception):
        pass

    full = storage_error(SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)"))
    assert isinstance(full, StorageError) and "No space left on device" in full.message
    assert storage_error(SafetensorError("invalid header (os error 2)")) is None  # ENOENT: not the workspace's state
    assert storage_error(ValueError("os error 28 without the parentheses")) is None
