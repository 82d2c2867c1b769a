"""Every `--json` answer of the CLI is its response schema, exactly: validating it and writing it back gives the same
document (no key the schema does not declare, none missing). Run with the real CLI, in a fresh workspace and in the
session's trained workspace with a served endpoint (tests/integration/conftest.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from chattune.schemas import (
    CatalogEntryPublic,
    ComputeCheckPublic,
    ComputePublic,
    ComputeTargetList,
    ComputeTargetPublic,
    DataDemo,
    DataImport,
    DataPreview,
    DataValidation,
    DeploymentList,
    EndpointKeys,
    EndpointList,
    EndpointPublic,
    JobList,
    JobPublic,
    ModelAliasPublic,
    ModelImportPublic,
    ModelList,
    ModelTagsPublic,
    ModelVersionDetail,
    ModelVersionPublic,
    ScoreAnswer,
)
from tests.conftest import exact, parse_json


def test_workspace_commands_answer_their_schemas(cli: Any, tmp_path: Path) -> None:
    data = tmp_path / "data"
    split = exact(DataDemo, parse_json(cli("data", "demo", "--out", str(data), "--rows", "12", "--json")))
    train = split["train_sft"]
    exact(DataValidation, parse_json(cli("data", "validate", train, "--json")))
    exact(DataPreview, parse_json(cli("data", "show", train, "--rows", "2", "--json")))
    exact(DataImport, parse_json(cli("data", "import", train, "--out", str(tmp_path / "imported"), "--json")))
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"messages": [{"role": "user"}]}) + "\n", encoding="utf-8")
    invalid = cli("data", "validate", str(bad), "--json")
    assert invalid.returncode == 2
    assert exact(DataValidation, json.loads(invalid.stdout))["valid"] is False

    exact(ComputePublic, parse_json(cli("compute", "show", "--json")))
    exact(ComputeCheckPublic, parse_json(cli("compute", "check", "--model", "tiny-test", "--json")))
    exact(ModelList, parse_json(cli("models", "list", "--json")))
    exact(CatalogEntryPublic, parse_json(cli("models", "show", "tiny-test", "--json")))
    exact(ModelImportPublic, parse_json(cli("models", "import", "tiny-test", "--json")))
    exact(JobList, parse_json(cli("jobs", "list", "--json")))
    exact(EndpointList, parse_json(cli("endpoints", "list", "--json")))
    # a Ray target by address, nothing listening there: recorded, and listed as unreachable with the reason
    add = ("compute", "add", "team", "--ray-address", "127.0.0.1:1", "--json")
    added = exact(ComputeTargetPublic, parse_json(cli(*add)))
    listed = exact(ComputeTargetList, parse_json(cli("compute", "list", "--json")))
    assert [t["name"] for t in listed["data"]] == ["local", "team"] and added["local_cluster"] is None
    assert listed["data"][1]["reachable"] is False and "nothing answers at 127.0.0.1:1" in listed["data"][1]["error"]
    bad = cli("compute", "add", "Team", "--ray-address", "http://x")
    assert bad.returncode == 2 and "compute target name 'Team'" in bad.stderr


def test_served_workspace_commands_answer_their_schemas(cli: Any, served: dict[str, Any], tmp_path: Path) -> None:
    endpoint = served["endpoint"]
    jobs = exact(JobList, parse_json(cli("jobs", "list", "--json")))
    job = exact(JobPublic, parse_json(cli("jobs", "show", jobs["data"][-1]["id"], "--json")))
    assert job["steps"] and job["events"]

    listed = exact(ModelList, parse_json(cli("models", "list", "--json")))
    assert listed["registered"]
    shown = exact(ModelVersionDetail, parse_json(cli("models", "show", served["model"], "--json")))
    assert f"{served['endpoint']}/demo" in shown["deployments"]  # the end of its lineage: who serves it
    # a version of this test's own, from the session's job, so that the shared one stays as it is
    register = ("models", "register", "--job", job["id"], "--name", "schemas", "--json")
    mv = exact(ModelVersionPublic, parse_json(cli(*register)))
    exact(ModelTagsPublic, parse_json(cli("models", "tag", mv["id"], "stage=test", "--json")))
    exact(ModelAliasPublic, parse_json(cli("models", "alias", "schemas@best", mv["version"], "--json")))
    assert exact(ModelAliasPublic, parse_json(cli("models", "alias", "schemas@best", "--delete", "--json")))["deleted"]
    cli("models", "delete", mv["id"])

    exact(EndpointPublic, parse_json(cli("endpoints", "show", endpoint, "--json")))
    assert endpoint in [e["name"] for e in exact(EndpointList, parse_json(cli("endpoints", "list", "--json")))]
    exact(EndpointPublic, parse_json(cli("endpoints", "traffic", endpoint, "demo=100", "--json")))
    exact(EndpointList, parse_json(cli("endpoints", "up", "--json")))
    deployments = exact(DeploymentList, parse_json(cli("deployments", "list", "--endpoint", endpoint, "--json")))
    assert [d["name"] for d in deployments] == ["demo"]

    keys = exact(EndpointKeys, parse_json(cli("endpoints", "keys", endpoint, "--json")))
    ask = tmp_path / "request.json"
    messages = [[{"role": "user", "content": "Hi"}]]
    ask.write_text(json.dumps({"input_data": {"input_string": messages, "parameters": {"max_new_tokens": 2}}}), "utf-8")
    answer = parse_json(cli("endpoints", "invoke", endpoint, "--request-file", str(ask), "--json"))
    exact(ScoreAnswer, answer)

    rotate = ("endpoints", "regenerate-keys", endpoint, "--key", "secondary", "--json")
    rotated = exact(EndpointKeys, parse_json(cli(*rotate)))
    assert rotated["primary_key"] == keys["primary_key"] and rotated["secondary_key"] != keys["secondary_key"]
