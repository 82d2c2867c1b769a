"""validate: every data file is checked with the same validator as `chattune data validate`; errors stop the job."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from chattune.data.preferences import validate_preferences
from chattune.data.validate import MIN_TRAIN_ROWS, validate_files
from chattune.entities import Task
from chattune.errors import DataError
from chattune.pipeline.context import KeyInputs, StepContext
from chattune.pipeline.outputs import FileCheck, ValidateOutput


def file_sha256(path: str | Path) -> str:
    """The SHA-256 hex digest of a file, read in chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class Validate:
    """The ``validate`` step."""

    name = "validate"
    needs: tuple[str, ...] = ()

    def cache_key(self, given: KeyInputs) -> dict[str, Any] | None:
        """The content of every data file and the format they are read in."""
        return {"files": given.file_hashes, "format": given.spec.data.format, "task": given.spec.task.value}

    def run(self, ctx: StepContext) -> ValidateOutput:
        """Validate every data file; a file with errors fails the step."""
        return run(ctx)


STEP = Validate()


def run(ctx: StepContext) -> ValidateOutput:
    """The validate step: check every data file of the job as ``chattune data validate`` does, together."""
    roles = {r: getattr(ctx.spec.data, r) for r in ("train", "validation", "test", "generation_test")}
    paths = {r: Path(p) for r, p in roles.items() if p}
    if ctx.spec.task == Task.PREFERENCE:  # the same validator as `chattune data validate --task preference`
        reports = [
            validate_preferences(path, min_rows=MIN_TRAIN_ROWS if role == "train" else 1)
            for role, path in paths.items()
        ]
    else:
        # The same validator as `chattune data validate`, over all files at once (so a test row that is also a
        # training row is reported).
        reports = validate_files(
            list(paths.values()),
            min_rows_by_path={str(paths["train"]): MIN_TRAIN_ROWS},
            fmt=ctx.spec.data.format,
            generation_paths=[paths["generation_test"]] if "generation_test" in paths else [],
        )
    files: dict[str, FileCheck] = {}
    for (role, path), report in zip(paths.items(), reports, strict=True):
        for w in report.warnings:
            ctx.log.warning("%s:%s: %s: %s [%s]", path, w.line, w.field, w.message, w.code)
        files[role] = FileCheck(
            path=str(path),
            sha256=file_sha256(path),
            rows=report.rows,
            format=report.format,
            format_source=report.format_source,
            valid=report.valid,
            warnings=len(report.warnings),
            dropped_rows=report.stats.get("dropped_rows", 0),
        )
        ctx.progress(
            f"  {role}: {path} ({report.format}, {report.format_source}; {report.rows} rows, {len(report.errors)} "
            f"errors, {len(report.warnings)} warnings"
            + (
                f", {report.stats['dropped_rows']} to drop: fewer than 2 messages"
                if report.stats.get("dropped_rows")
                else ""
            )
            + ")"
        )
    failed = [r for r in reports if not r.valid]
    if failed:
        summary = "\n".join(r.summary() for r in failed)
        errors = [{"path": r.path, **e.__dict__} for r in failed for e in r.errors]
        raise DataError(
            f"data validation failed; training was not started:\n{summary}",
            remedy="Fix the listed rows (see `chattune data validate FILE`), then create the job again.",
            details={"errors": errors},
        )
    return ValidateOutput(files=files)
