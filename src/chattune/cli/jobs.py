"""`chattune jobs`: create from YAML, list, show, stream, cancel."""

from __future__ import annotations

from pathlib import Path

import typer

from chattune.cli.output import emit, out, progress, table
from chattune.pipeline.config import load_spec
from chattune.schemas import JobPublic, JobSummary
from chattune.workspace import Workspace, documents

app = typer.Typer(help="Fine-tuning pipeline jobs.", no_args_is_help=True)
JSON = typer.Option(False, "--json", help="Print one JSON document on stdout.")


@app.command("create")
def create(
    file: Path = typer.Option(..., "-f", "--file", help="job YAML (see CLI.md)"),
    stream: bool = typer.Option(False, "--stream", help="follow the job until it ends"),
    compute: str = typer.Option(None, "--compute", help="compute target (`chattune compute list`), over the file's"),
    json_: bool = JSON,
) -> None:
    """Validate the job file, start the job, print its id."""
    spec = load_spec(file)
    ws = Workspace.from_env()
    job, warnings = ws.jobs.create(spec, compute_name=compute)
    for w in warnings:
        progress(f"warning: {w}")
    if stream:
        job = ws.jobs.stream(job.id, progress)
    emit(JobSummary.from_job(job), json_, lambda doc: out.print(doc.id))
    if stream and str(job.status) != "succeeded":
        raise typer.Exit(1)


@app.command("list")
def list_(
    limit: int = typer.Option(20, "--limit"), after: str = typer.Option(None, "--after"), json_: bool = JSON
) -> None:
    """Jobs, newest first, a page at a time (``--after`` the last id shown)."""
    doc = documents.job_page(Workspace.from_env(), limit, after)
    emit(
        doc,
        json_,
        lambda d: table(
            "jobs",
            ["id", "status", "model", "display name"],
            [[j.id, j.status, j.model, j.display_name] for j in d.data],
        ),
    )


@app.command("show")
def show(job_id: str, json_: bool = JSON) -> None:
    """A job with its steps, checkpoints, metrics and events."""
    emit(documents.job(Workspace.from_env(), job_id), json_, _render_job)


def _render_job(job: JobPublic) -> None:
    out.print(f"{job.id} {job.status}  {job.display_name}")
    table(
        "steps",
        ["step", "status", "seconds", "reused from", "log", "error"],
        [
            [s.name, s.status, f"{s.duration_s:.1f}" if s.duration_s else "", s.reused_from, s.log_path, s.error]
            for s in job.steps
        ],
    )
    if job.checkpoints:
        table(
            "checkpoints",
            ["step", "train loss", "valid loss"],
            [[c.step_number, c.metrics.train_loss, c.metrics.valid_loss] for c in job.checkpoints],
        )
    for which in ("base", "tuned"):
        if which in job.metrics:
            out.print(f"{which}: " + ", ".join(f"{k} {v:.4g}" for k, v in job.metrics[which].items()))
    note = next((s.outputs.get("note") for s in job.steps if s.name == "evaluate" and s.outputs), None)
    if note:
        out.print(note, markup=False)


@app.command("stream")
def stream(job_id: str) -> None:
    """Print the job's log until it ends; exit 1 if it did not succeed."""
    job = Workspace.from_env().jobs.stream(job_id, progress)
    if str(job.status) != "succeeded":
        raise typer.Exit(1)


@app.command("resume")
def resume(
    job_id: str, stream: bool = typer.Option(False, "--stream", help="follow it until it ends"), json_: bool = JSON
) -> None:
    """Continue a failed or cancelled job: finished steps are kept, the finetune resumes from its last checkpoint."""
    ws = Workspace.from_env()
    job = ws.jobs.resume(job_id)
    if stream:
        job = ws.jobs.stream(job_id, progress)
    emit(JobSummary.from_job(job), json_, lambda doc: out.print(f"{job_id}: {doc.status}"))
    if stream and str(job.status) != "succeeded":
        raise typer.Exit(1)


@app.command("cancel")
def cancel(job_id: str) -> None:
    """Cancel a queued or running job."""
    Workspace.from_env().jobs.cancel(job_id)
    out.print(f"cancelling {job_id}")
