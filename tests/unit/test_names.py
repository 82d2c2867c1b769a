"""Name checks: registry names become directory names, endpoint names follow Azure's rule."""

from __future__ import annotations

import pytest

from chattune.endpoints.service import check_name as endpoint_name
from chattune.errors import UserError
from chattune.registry import check_name as registry_name
from chattune.registry import parse_ref

BAD_EVERYWHERE = ["../x", "..", "a/b", "a\\b", "", "has space", " lead", "/abs", "x\x00y", "tab\tname"]


@pytest.mark.parametrize("name", BAD_EVERYWHERE)
def test_registry_refuses_bad_names(name: str) -> None:
    with pytest.raises(UserError) as exc:
        registry_name("model", name)
    assert exc.value.code == "invalid_input"
    assert exc.value.message == f"invalid model name {name!r}"
    assert "letters, digits" in (exc.value.remedy or "")


@pytest.mark.parametrize("name", ["a..b", "-lead", ".hidden", "x" * 129])
def test_registry_refuses_traversal_and_odd_starts(name: str) -> None:
    with pytest.raises(UserError):
        registry_name("version", name)


@pytest.mark.parametrize("name", ["tiny-test-data", "Phi-3-mini-4k-instruct_ft", "1700000000", "v1.2", "x" * 128])
def test_registry_accepts_good_names(name: str) -> None:
    assert registry_name("model", name) == name


@pytest.mark.parametrize("name", [*BAD_EVERYWHERE, "ab", "1abc", "end-", "under_score", "dot.name", "x" * 33])
def test_endpoint_refuses_bad_names(name: str) -> None:
    with pytest.raises(UserError) as exc:
        endpoint_name("endpoint", name)
    assert exc.value.message == f"invalid endpoint name {name!r}"
    assert exc.value.exit_code == 2


@pytest.mark.parametrize("name", ["abc", "demo", "my-endpoint-2", "Blue", "a" * 32])
def test_endpoint_accepts_good_names(name: str) -> None:
    assert endpoint_name("deployment", name) == name


def test_registry_refuses_trailing_newline() -> None:
    with pytest.raises(UserError):
        registry_name("model", "name\n")


def test_endpoint_refuses_trailing_newline() -> None:
    with pytest.raises(UserError):
        endpoint_name("endpoint", "demo\n")


def test_parse_ref() -> None:
    assert parse_ref("model") == ("model", None, None)
    assert parse_ref("model:3") == ("model", "3", None)
    assert parse_ref("model:") == ("model", None, None)
    assert parse_ref("model@champion") == ("model", None, "champion")
