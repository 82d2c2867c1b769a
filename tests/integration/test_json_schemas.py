"""Every `--json` answer of the CLI is its response schema, exactly: validating it and writing it back gives the same
document (no key the schema does not declare, none missing). Run with the real CLI, in a fresh workspace and in the
session's trained workspace with a served endpoint (tests/integration/conftest.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from chattune.schemas import (
    CatalogEntryPublic,
    ComputeCheckPublic,
    ComputePublic,
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
from tests.conftest import parse_json


def _is(schema: type[BaseModel], doc: Any) -> Any:
    assert schema.model_validate(doc).model_dump(mode="json") == doc, schema.__name__
    return doc


def test_workspace_commands_answer_their_schemas(cli: Any, tmp_path: Path) -> None:
    data = tmp_path / "data"
    split = _is(DataDemo, parse_json(cli("data", "demo", "--out", str(data), "--rows", "12", "--json")))
    train = split["train_sft"]
    _is(DataValidation, parse_json(cli("data", "validate", train, "--json")))
    _is(DataPreview, parse_json(cli("data", "show", train, "--rows", "2", "--json")))
    _is(DataImport, parse_json(cli("data", "import", train, "--out", str(tmp_path / "imported"), "--json")))
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"messages": [{"role": "user"}]}) + "\n", encoding="utf-8")
    invalid = cli("data", "validate", str(bad), "--json")
    assert invalid.returncode == 2
    assert _is(DataValidation, json.loads(invalid.stdout))["valid"] is False

    _is(ComputePublic, parse_json(cli("compute", "show", "--json")))
    _is(ComputeCheckPublic, parse_json(cli("compute", "check", "--model", "tiny-test", "--json")))
    _is(ModelList, parse_json(cli("models", "list", "--json")))
    _is(CatalogEntryPublic, parse_json(cli("models", "show", "tiny-test", "--json")))
    _is(ModelImportPublic, parse_json(cli("models", "import", "tiny-test", "--json")))
    _is(JobList, parse_json(cli("jobs", "list", "--json")))
    _is(EndpointList, parse_json(cli("endpoints", "list", "--json")))


def test_served_workspace_commands_answer_their_schemas(cli: Any, served: dict[str, Any], tmp_path: Path) -> None:
    endpoint = served["endpoint"]
    jobs = _is(JobList, parse_json(cli("jobs", "list", "--json")))
    job = _is(JobPublic, parse_json(cli("jobs", "show", jobs["data"][-1]["id"], "--json")))
    assert job["steps"] and job["events"]

    listed = _is(ModelList, parse_json(cli("models", "list", "--json")))
    assert listed["registered"]
    _is(ModelVersionDetail, parse_json(cli("models", "show", served["model"], "--json")))
    # a version of this test's own, from the session's job, so that the shared one stays as it is
    register = ("models", "register", "--job", job["id"], "--name", "schemas", "--json")
    mv = _is(ModelVersionPublic, parse_json(cli(*register)))
    _is(ModelTagsPublic, parse_json(cli("models", "tag", mv["id"], "stage=test", "--json")))
    _is(ModelAliasPublic, parse_json(cli("models", "alias", "schemas@best", mv["version"], "--json")))
    assert _is(ModelAliasPublic, parse_json(cli("models", "alias", "schemas@best", "--delete", "--json")))["deleted"]
    cli("models", "delete", mv["id"])

    _is(EndpointPublic, parse_json(cli("endpoints", "show", endpoint, "--json")))
    assert endpoint in [e["name"] for e in _is(EndpointList, parse_json(cli("endpoints", "list", "--json")))]
    _is(EndpointPublic, parse_json(cli("endpoints", "traffic", endpoint, "demo=100", "--json")))
    _is(EndpointList, parse_json(cli("endpoints", "up", "--json")))
    deployments = _is(DeploymentList, parse_json(cli("deployments", "list", "--endpoint", endpoint, "--json")))
    assert [d["name"] for d in deployments] == ["demo"]

    keys = _is(EndpointKeys, parse_json(cli("endpoints", "keys", endpoint, "--json")))
    ask = tmp_path / "request.json"
    messages = [[{"role": "user", "content": "Hi"}]]
    ask.write_text(json.dumps({"input_data": {"input_string": messages, "parameters": {"max_new_tokens": 2}}}), "utf-8")
    answer = parse_json(cli("endpoints", "invoke", endpoint, "--request-file", str(ask), "--json"))
    _is(ScoreAnswer, answer)

    rotate = ("endpoints", "regenerate-keys", endpoint, "--key", "secondary", "--json")
    rotated = _is(EndpointKeys, parse_json(cli(*rotate)))
    assert rotated["primary_key"] == keys["primary_key"] and rotated["secondary_key"] != keys["secondary_key"]
