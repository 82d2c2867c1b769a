"""The studio's web pages, server-rendered with Jinja2.

htmx polls the partials (the dashboard's jobs, a running job's steps) and a uPlot loss curve is fed by the job's
server-sent events. Pages that only show data read fine without JavaScript; the vendored libraries and their
licences are listed in ``static/VENDORED.md``.
"""

from __future__ import annotations

import urllib.parse
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, PackageLoader, select_autoescape

from chattune.studio.auth import Sessions, close_session, open_session
from chattune.studio.token import StudioToken
from chattune.workspace import Workspace, documents

STATIC = Path(__file__).parent / "static"


def add_pages(app: FastAPI, ws: Workspace, token: StudioToken, sessions: Sessions) -> None:
    """Add the login, dashboard and job pages (and their partials and static files) to ``app``."""
    env = Environment(loader=PackageLoader("chattune.studio", "pages"), autoescape=select_autoescape(["html"]))

    def page(name: str, status: int = 200, **context: object) -> HTMLResponse:
        return HTMLResponse(env.get_template(name).render(**context), status_code=status)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/login", include_in_schema=False)
    async def login_page() -> HTMLResponse:
        return page("login.html", error=None)

    @app.post("/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        form = urllib.parse.parse_qs((await request.body()).decode("utf-8", errors="replace"))
        presented = (form.get("token") or [""])[0]
        if not token.accepts(presented):
            return page("login.html", status=400, error="That is not the studio token.")
        answer = RedirectResponse("/", status_code=303)
        open_session(answer, sessions, presented)
        return answer

    @app.post("/logout", include_in_schema=False)
    async def logout(request: Request) -> Response:
        answer = RedirectResponse("/login", status_code=303)
        close_session(answer, sessions, request.headers)
        return answer

    @app.get("/", include_in_schema=False)
    async def dashboard() -> HTMLResponse:
        return page(
            "dashboard.html",
            title="Dashboard",
            jobs=documents.job_page(ws, 20, None),
            endpoints=documents.endpoint_list(ws),
        )

    @app.get("/partials/jobs", include_in_schema=False)
    async def jobs_partial() -> HTMLResponse:
        return page("jobs_table.html", jobs=documents.job_page(ws, 20, None))

    @app.get("/jobs/{job_id}", include_in_schema=False)
    async def job_page(job_id: str) -> HTMLResponse:
        return page("job.html", title=f"Job {job_id}", job=documents.job(ws, job_id))

    @app.get("/partials/jobs/{job_id}/steps", include_in_schema=False)
    async def steps_partial(job_id: str) -> HTMLResponse:
        return page("job_steps.html", job=documents.job(ws, job_id))
