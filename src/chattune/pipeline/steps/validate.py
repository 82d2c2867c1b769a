"""validate: every data file is checked with the same validator as `chattune data validate`; errors stop the job."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from chattune.data.validate import MIN_TRAIN_ROWS, validate_file
from chattune.errors import DataError
from chattune.pipeline.context import StepContext


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def run(ctx: StepContext) -> dict[str, Any]:
    files: dict[str, Any] = {}
    failed = []
    for role in ("train", "validation", "test", "generation_test"):
        path = getattr(ctx.spec.data, role)
        if not path:
            continue
        report = validate_file(Path(path), min_rows=MIN_TRAIN_ROWS if role == "train" else 1)
        for w in report.warnings:
            ctx.log.warning("%s:%s: %s: %s [%s]", path, w.line, w.field, w.message, w.code)
        files[role] = {"path": path, "sha256": file_sha256(path), "rows": report.rows, "valid": report.valid}
        ctx.progress(
            f"  {role}: {path} ({report.rows} rows, {len(report.errors)} errors, {len(report.warnings)} warnings)"
        )
        if not report.valid:
            failed.append(report)
    if failed:
        summary = "\n".join(r.summary() for r in failed)
        errors = [{"path": r.path, **e.__dict__} for r in failed for e in r.errors]
        raise DataError(
            f"data validation failed; training was not started:\n{summary}",
            remedy="Fix the listed rows (see `chattune data validate FILE`), then create the job again.",
            details={"errors": errors},
        )
    return {"files": files}
