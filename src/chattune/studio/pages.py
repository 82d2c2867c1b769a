"""The studio's web pages, server-rendered with Jinja2.

htmx polls the partials (the dashboard's jobs, a running job's steps) and a uPlot loss curve is fed by the job's
server-sent events. Pages that only show data read fine without JavaScript; the vendored libraries and their
licences are listed in ``static/VENDORED.md``.
"""

from __future__ import annotations

import asyncio
import urllib.parse
from pathlib import Path

import yaml
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, PackageLoader, select_autoescape

from chattune.errors import ChattuneError, NotFoundError, UserError
from chattune.studio import compare, gateway_metrics
from chattune.studio.auth import Sessions, close_session, open_session
from chattune.studio.datasets import dataset_path, stored
from chattune.studio.mlflow_links import MlflowLinks
from chattune.studio.token import StudioToken
from chattune.workspace import Workspace, documents

STATIC = Path(__file__).parent / "static"


def add_pages(app: FastAPI, ws: Workspace, token: StudioToken, sessions: Sessions) -> None:
    """Add the login, dashboard and job pages (and their partials and static files) to ``app``."""
    env = Environment(loader=PackageLoader("chattune.studio", "pages"), autoescape=select_autoescape(["html"]))
    env.globals["mlflow"] = MlflowLinks.from_settings(ws.settings)

    def page(template: str, status: int = 200, **context: object) -> HTMLResponse:
        return HTMLResponse(env.get_template(template).render(**context), status_code=status)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/login", include_in_schema=False)
    async def login_page() -> HTMLResponse:
        return page("login.html", error=None)

    @app.post("/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        presented = (await _form(request)).get("token", "")
        if not token.accepts(presented):
            return page("login.html", status=401, error="That is not the studio token.")
        answer = RedirectResponse("/", status_code=303)
        open_session(answer, sessions, presented)
        return answer

    @app.post("/logout", include_in_schema=False)
    async def logout(request: Request) -> Response:
        answer = RedirectResponse("/login", status_code=303)
        close_session(answer, sessions, request.headers)
        return answer

    def dashboard_page(status: int = 200, error: str | None = None) -> HTMLResponse:
        return page(
            "dashboard.html",
            status,
            title="Dashboard",
            jobs=documents.job_page(ws, 20, None),
            models=documents.model_list(ws),
            endpoints=documents.endpoint_list(ws),
            error=error,
        )

    def endpoint_page(name: str, status: int = 200, **context: object) -> HTMLResponse:
        return page(
            "endpoint.html",
            status,
            title=f"Endpoint {name}",
            ep=documents.endpoint(ws, name),
            deployments=documents.deployment_list(ws, name),
            models=documents.model_list(ws),
            **{"error": None, "keys": None, "requests": None, **context},
        )

    @app.get("/", include_in_schema=False)
    async def dashboard() -> HTMLResponse:
        return dashboard_page()

    @app.post("/endpoints", include_in_schema=False)
    async def create_endpoint(request: Request) -> Response:
        name = (await _form(request)).get("name", "")
        try:
            await asyncio.to_thread(ws.endpoints.create, name)
        except ChattuneError as exc:
            return dashboard_page(exc.http_status, exc.message)
        return RedirectResponse(f"/endpoints/{name}", status_code=303)

    @app.get("/endpoints/{name}", include_in_schema=False)
    async def endpoint(name: str) -> HTMLResponse:
        ep = documents.endpoint(ws, name)
        if ep.scoring_uri is None:
            requests: dict[str, object] = {"error": "the endpoint has no gateway address"}
        else:
            gateway = ep.scoring_uri.removesuffix("/score")
            requests = await gateway_metrics.fetch(gateway, ws.endpoints.keys(name)["primary"])
        return endpoint_page(name, requests=requests)

    @app.get("/endpoints/{name}/deployments/{deployment}/logs", include_in_schema=False)
    async def deployment_logs(name: str, deployment: str) -> HTMLResponse:
        text = await asyncio.to_thread(ws.endpoints.logs, name, deployment, 500)
        return page(
            "deployment_logs.html", title=f"Logs of {name}/{deployment}", name=name, deployment=deployment, log=text
        )

    async def set_split(name: str, request: Request, what: str) -> Response:
        """Set the endpoint's live (``traffic``) or shadow (``mirror``) split from a form of deployment -> percent."""
        setter = ws.endpoints.set_traffic if what == "traffic" else ws.endpoints.set_mirror
        try:
            split = {dep: int(pct or 0) for dep, pct in (await _form(request)).items()}
            setter(name, split)
        except ValueError:
            return endpoint_page(name, 400, error=f"{what}: whole percentages only")
        except ChattuneError as exc:
            return endpoint_page(name, exc.http_status, error=exc.message)
        return RedirectResponse(f"/endpoints/{name}", status_code=303)

    @app.post("/endpoints/{name}/traffic", include_in_schema=False)
    async def traffic(name: str, request: Request) -> Response:
        return await set_split(name, request, "traffic")

    @app.post("/endpoints/{name}/mirror", include_in_schema=False)
    async def mirror(name: str, request: Request) -> Response:
        return await set_split(name, request, "mirror")

    @app.post("/endpoints/{name}/deployments", include_in_schema=False)
    async def deploy(name: str, request: Request) -> Response:
        form = await _form(request)
        try:
            await asyncio.to_thread(ws.endpoints.deploy, name, form.get("name", ""), form.get("model", ""), wait=False)
        except ChattuneError as exc:
            return endpoint_page(name, exc.http_status, error=exc.message)
        return RedirectResponse(f"/endpoints/{name}", status_code=303)

    @app.post("/endpoints/{name}/keys/{key_type}", include_in_schema=False)
    async def regenerate(name: str, key_type: str) -> HTMLResponse:
        try:
            new = await asyncio.to_thread(ws.endpoints.regenerate_key, name, key_type)
        except ChattuneError as exc:
            return endpoint_page(name, exc.http_status, error=exc.message)
        return endpoint_page(name, keys=new, keys_label=f"{key_type} key")

    @app.post("/endpoints/{name}/delete", include_in_schema=False)
    async def delete_endpoint(name: str) -> Response:
        await asyncio.to_thread(ws.endpoints.delete, name)
        return RedirectResponse("/", status_code=303)

    @app.get("/endpoints/{name}/playground", include_in_schema=False)
    async def playground(name: str) -> HTMLResponse:
        deployments = documents.deployment_list(ws, name)
        base = ""
        if deployments.root:
            first = ws.registry.get(f"{deployments.root[0].model_name}:{deployments.root[0].model_version}")
            base = first.base_model if first.kind == "lora" else ""
        return page(
            "playground.html",
            title=f"Playground {name}",
            ep=documents.endpoint(ws, name),
            deployments=deployments,
            base_model=base,
        )

    @app.post("/jobs/{job_id}/register", include_in_schema=False)
    async def register(job_id: str, request: Request) -> Response:
        name = (await _form(request)).get("name") or None
        try:
            await asyncio.to_thread(ws.registry.register, job_id, name=name)
        except ChattuneError as exc:
            return page(
                "job.html", exc.http_status, title=f"Job {job_id}", job=documents.job(ws, job_id), error=exc.message
            )
        return RedirectResponse("/", status_code=303)

    @app.get("/partials/jobs", include_in_schema=False)
    async def jobs_partial() -> HTMLResponse:
        return page("jobs_table.html", jobs=documents.job_page(ws, 20, None))

    @app.get("/data", include_in_schema=False)
    async def data() -> HTMLResponse:
        return page("data.html", title="Data", files=stored(ws))

    @app.get("/data/{filename}", include_in_schema=False)
    async def data_file(filename: str, offset: int = 0) -> HTMLResponse:
        path = dataset_path(ws, filename)
        if not path.exists():
            raise NotFoundError(f"no data file {filename!r} in the workspace")
        rows = 10
        preview = await asyncio.to_thread(documents.data_preview, ws, path, rows=rows, offset=max(0, offset))
        return page("data_file.html", title=filename, name=filename, preview=preview, offset=max(0, offset), rows=rows)

    def new_job_page(status: int = 200, **context: object) -> HTMLResponse:
        context = {"form": {}, "error": None, "yaml": None, **context}
        return page(
            "new_job.html", status, title="New job", models=documents.model_list(ws), files=stored(ws), **context
        )

    @app.get("/jobs/new", include_in_schema=False)
    async def new_job() -> HTMLResponse:
        return new_job_page()

    @app.post("/jobs/new", include_in_schema=False)
    async def start_job(request: Request) -> Response:
        form = await _form(request)
        try:
            spec = job_spec(ws, form)
            if form.get("action") == "yaml":
                return new_job_page(form=form, yaml=yaml.safe_dump(spec, sort_keys=False))
            job, _ = await asyncio.to_thread(ws.jobs.create, spec)
        except ChattuneError as exc:
            return new_job_page(exc.http_status, form=form, error=exc.message)
        return RedirectResponse(f"/jobs/{job.id}", status_code=303)

    @app.get("/catalog", include_in_schema=False)
    async def catalog_page() -> HTMLResponse:
        entries = [documents.catalog_entry(ws, entry) for entry in ws.catalog.list()]
        return page("catalog.html", title="Catalog", entries=entries)

    @app.get("/models/{ref}", include_in_schema=False)
    async def model_page(ref: str) -> HTMLResponse:
        mv = documents.model_version(ws, ref)
        return page("model.html", title=f"Model {mv.id}", mv=mv)

    @app.get("/jobs/compare", include_in_schema=False)
    async def compare_jobs(a: str, b: str) -> HTMLResponse:
        first, second = documents.job(ws, a), documents.job(ws, b)
        return page(
            "jobs_compare.html",
            title=f"Compare {a} and {b}",
            a=first,
            b=second,
            curves={"a": compare.curves(first), "b": compare.curves(second)},
            diffs=compare.differences(first, second),
            metrics=compare.metric_rows(first, second),
        )

    @app.get("/jobs/{job_id}", include_in_schema=False)
    async def job_page(job_id: str) -> HTMLResponse:
        return page(
            "job.html",
            title=f"Job {job_id}",
            job=documents.job(ws, job_id),
            others=[j for j in documents.job_page(ws, 20, None).data if j.id != job_id],
        )

    @app.post("/jobs/{job_id}/cancel", include_in_schema=False)
    async def cancel(job_id: str) -> Response:
        await asyncio.to_thread(ws.jobs.cancel, job_id)
        return RedirectResponse(f"/jobs/{job_id}", status_code=303)

    @app.post("/jobs/{job_id}/resume", include_in_schema=False)
    async def resume(job_id: str) -> Response:
        await asyncio.to_thread(ws.jobs.resume, job_id)
        return RedirectResponse(f"/jobs/{job_id}", status_code=303)

    @app.get("/partials/jobs/{job_id}/steps", include_in_schema=False)
    async def steps_partial(job_id: str) -> HTMLResponse:
        return page("job_steps.html", job=documents.job(ws, job_id))


async def _form(request: Request) -> dict[str, str]:
    """An HTML form's fields (application/x-www-form-urlencoded), the first value of each."""
    fields = urllib.parse.parse_qs((await request.body()).decode("utf-8", errors="replace"), keep_blank_values=True)
    return {name: values[0] for name, values in fields.items()}


def job_spec(ws: Workspace, form: dict[str, str]) -> dict[str, object]:
    """The job document the new-job form describes (stored data files by their workspace paths)."""

    def number(field: str, kind: type[int] | type[float]) -> int | float:
        try:
            return kind(form.get(field, ""))
        except ValueError:
            raise UserError(f"{field}: {form.get(field)!r} is not a number", param=field) from None

    return {
        "model": form.get("model", ""),
        "data": {
            "train": str(dataset_path(ws, form.get("train", ""))),
            "test": str(dataset_path(ws, form.get("test", ""))),
        },
        "training": {
            "num_train_epochs": number("num_train_epochs", int),
            "learning_rate": number("learning_rate", float),
            "per_device_train_batch_size": number("per_device_train_batch_size", int),
            "logging_steps": number("logging_steps", int),
        },
        "optimization": {"apply_lora": True, "lora_r": number("lora_r", int)},
    }
