"""Shared fixtures: a throwaway workspace per test and a runner for the real `chattune` command."""

from __future__ import annotations

import os

# pytest-xdist's workers share the cores: each worker's torch processes would use all of them, and while they wait at
# an OpenMP barrier for a thread that the other worker's process has descheduled, GNU OpenMP's threads spin by
# default. Passive waiting (set before anything imports torch: its OpenMP runtime reads it at load, and every
# process a test starts inherits it) gives the core back instead. A training- and serving-heavy fifth of the suite on
# 2 workers and 2 cores: 193 s by default, 151 s with one thread per process (but a process running alone then
# leaves a core idle, and the whole suite was no faster), 137 s with passive waiting. A value the user set is kept.
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0")) > 1:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import contextlib
import json
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from chattune import preload
from chattune.processes import child_env
from chattune.settings import Settings

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"


def shared_fixture(*parts: str) -> Path:
    """A path under shared/fixtures, or a clean skip of the test when the checkout has no shared/ beside it."""
    path = FIXTURES.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared fixture {path} is absent")
    return path


# Small data files of our own, for formats no third-party fixture has (ShareGPT in LLaMA-Factory's shape).
TEST_DATA = Path(__file__).resolve().parent / "data"
_SESSION_CACHE: list[str] = []


def pytest_configure(config: pytest.Config) -> None:
    """The user-level model cache of the session: a fresh one, never the user's ~/.cache/chattune (set
    CHATTUNE_CACHE_DIR to reuse a cache across runs and skip the embedded model's download).

    Under pytest-xdist each worker gets one of its own (its own fork server: a worker that ends first stops only its
    own), unless CHATTUNE_CACHE_DIR was given.
    """
    ours = os.environ.get("CHATTUNE_TEST_CACHE")
    if "CHATTUNE_CACHE_DIR" not in os.environ or os.environ["CHATTUNE_CACHE_DIR"] == ours:
        _SESSION_CACHE.append(tempfile.mkdtemp(prefix="chattune-cache-"))
        os.environ["CHATTUNE_CACHE_DIR"] = os.environ["CHATTUNE_TEST_CACHE"] = _SESSION_CACHE[0]


# The files that take a minute or more of a 2-core run, slowest first (measured with --durations; docs/benchmarks.md).
# `make test` gives whole files to its xdist workers in collection order (--dist loadfile --no-loadscope-reorder), so
# the long ones start first and the short ones fill in around them, instead of one long file ending the run alone.
SLOWEST_FILES = (
    "integration/test_ray.py",
    "integration/test_endpoints.py",
    "integration/test_benches.py",
    "integration/test_studio_browser.py",
    "integration/test_job_lifecycle.py",
    "integration/test_faults.py",
    "integration/test_user_models.py",
    "integration/test_api_fuzz.py",
    "integration/test_preference.py",
    "integration/test_model_cache.py",
    "integration/test_distributed.py",
    "integration/test_studio.py",
    "integration/test_seed_notebook.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The slowest files first, then the other integration tests, then the unit tests (a stable sort)."""

    def rank(item: pytest.Item) -> int:
        path = item.path.as_posix()
        for i, name in enumerate(SLOWEST_FILES):
            if path.endswith(f"tests/{name}"):
                return i
        return len(SLOWEST_FILES) + ("/tests/unit/" in path)

    items.sort(key=rank)


def pytest_collection_finish(session: pytest.Session) -> None:
    """A fork server for the session's job runners and serving instances when integration tests will run: each then
    starts with torch, transformers and PEFT imported (chattune.preload). CHATTUNE_TEST_PRELOAD=0 runs the suite on
    plain processes only; tests whose environment differs (offline, namespaces) get plain processes anyway."""
    if os.environ.get("CHATTUNE_TEST_PRELOAD", "1") == "0" or session.config.option.collectonly:
        return
    if any(item.get_closest_marker("integration") for item in session.items):
        from chattune.processes import start_fork_server

        start_fork_server(wait_s=120)  # its imports (~10 s); should it not serve by then, processes start plainly


def pytest_unconfigure(config: pytest.Config) -> None:
    from chattune.processes import stop_fork_servers

    stop_fork_servers()
    for path in _SESSION_CACHE:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def home(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    # A test that asks for a served model (or the trained workspace itself) works in the session's trained workspace,
    # on an endpoint of its own (tests/integration/conftest.py): one training run and registration instead of one per
    # test. What such a test leaves running is stopped after it, but for the quickstart's kept endpoint.
    shared = {"served", "trained_workspace"} & set(request.fixturenames)
    trained = request.getfixturevalue("trained_workspace") if shared else None
    path = trained["home"] if trained else tmp_path / "home"
    monkeypatch.setenv("CHATTUNE_HOME", str(path))
    # The client's key copy goes beside the workspace, never to the real ~/.config.
    monkeypatch.setenv("CHATTUNE_CREDENTIALS_PATH", str(tmp_path / "credentials.json"))
    yield path
    _stop_leftovers(path, keep=trained["quickstart"]["endpoint"]["name"] if trained else None)


def _stop_leftovers(path: Path, keep: str | None = None) -> None:
    """Whatever a failed test left running in its workspace (gateways, instances, job runners) is stopped, but the
    processes of endpoint ``keep``."""
    db = path / "chattune.db"
    if not db.exists():
        return
    from chattune.processes import stop

    with contextlib.closing(sqlite3.connect(db)) as conn:
        pids = [
            r[0]
            for r in conn.execute("SELECT pid FROM endpoints WHERE name IS NOT ? UNION SELECT pid FROM jobs", (keep,))
        ]
        for (instances,) in conn.execute("SELECT instances FROM deployments WHERE endpoint IS NOT ?", (keep,)):
            pids += [i.get("pid") for i in json.loads(instances or "[]")]
    for pid in pids:
        if pid:
            stop(pid, timeout_s=5)


CliResult = subprocess.CompletedProcess


@pytest.fixture
def cli(home: Path) -> Callable[..., CliResult]:
    """Run `python -m chattune.cli.main ARGS` in a real process against the test workspace.

    The environment is what chattune gives its own children (chattune.processes.child_env: PYTHONSAFEPATH and the
    kernel-cache caps over the test's environment), so that the session's fork server can start the command.
    """

    def run(*args: str, timeout: float = 300, cwd: Path | None = None, env: dict[str, str] | None = None) -> CliResult:
        env = child_env(CHATTUNE_HOME=str(home), **(env or {}))
        env.setdefault("CHATTUNE_CREDENTIALS_PATH", str(home.parent / "credentials.json"))
        server = preload.socket_path(Settings().cache_dir, env)
        if server is not None and server.exists():
            # Forked by the session's fork server (chattune.preload): the same command, without ~1 s of imports.
            with contextlib.suppress(ConnectionError, FileNotFoundError):
                return preload.run(server, "chattune.cli.main", list(args), env, cwd=cwd, timeout=timeout)
        return subprocess.run(
            [sys.executable, "-m", "chattune.cli.main", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            cwd=cwd,
        )

    return run


def instance_auth(home: Path, endpoint: str) -> dict[str, str]:
    """The header an endpoint's gateway sends its instances; a test that calls an instance directly stands in for
    the gateway."""
    from chattune.serving.keys import INSTANCE_TOKEN_FILE

    token = (home / "endpoints" / endpoint / INSTANCE_TOKEN_FILE).read_text(encoding="utf-8")
    return {"Authorization": f"Bearer {token}"}


def parse_json(result: CliResult) -> Any:
    assert result.returncode == 0, f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return json.loads(result.stdout)


def exact(schema: type[BaseModel], doc: Any) -> Any:
    """``doc`` is ``schema``'s document, exactly: validated and written back it is the same (no key the schema does
    not declare, none missing). Every `--json` answer is checked this way (tests/integration/test_json_schemas.py and
    the commands that only the fixtures and slower tests run)."""
    assert schema.model_validate(doc).model_dump(mode="json") == doc, schema.__name__
    return doc


# A tool as OpenAI clients send it, finite by construction (enum and bounds), for the tool-calling tests.
WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "enum": ["Prague", "Brno"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 7},
            },
            "required": ["city", "days"],
            "additionalProperties": False,
        },
    },
}
