"""chattune.versions: pyproject's lower bounds cover what the code needs, and an older library is one clear error."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import pytest

from chattune import versions
from chattune.errors import DependencyError

tomllib = pytest.importorskip("tomllib")  # Python 3.11+; chattune itself runs on 3.10 too
PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def _floors() -> dict[str, str]:
    from packaging.requirements import Requirement

    deps = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    floors = {}
    for dep in map(Requirement, deps):
        lows = [s.version for s in dep.specifier if s.operator in (">=", "==", "~=")]
        if lows:
            floors[dep.name] = lows[0]
    return floors


def test_pyproject_floors_are_at_least_what_the_code_needs() -> None:
    floors = _floors()
    for dist, (needed, why) in versions.NEEDS.items():
        assert dist in floors, f"pyproject.toml has no lower bound for {dist} (needs >={needed}: {why})"
        assert versions._release(floors[dist]) >= versions._release(needed), (
            f"pyproject.toml lets {dist}>={floors[dist]} install, but the code needs >={needed}: {why}"
        )


def test_the_installed_libraries_meet_pyproject_floors() -> None:
    """The environment the tests run in is one pyproject allows: otherwise they test a combination users never get."""
    low = []
    for dist, floor in _floors().items():
        installed = metadata.version(dist)
        if versions._release(installed) < versions._release(floor):
            low.append(f"{dist} {installed} < {floor}")
    assert not low, f"installed below pyproject.toml's floors: {low}"
    assert versions.too_old() == []
    versions.check()


def test_an_older_library_is_one_clear_error_naming_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    real = metadata.version
    monkeypatch.setattr(metadata, "version", lambda d: "5.10.0" if d == "transformers" else real(d))
    with pytest.raises(DependencyError) as caught:
        versions.check()
    assert "transformers 5.10.0 is installed; chattune needs transformers>=5.24" in str(caught.value)
    assert "cache=" in str(caught.value) and caught.value.remedy == "pip install -U 'transformers>=5.24'"
    assert caught.value.exit_code == 1


@pytest.mark.parametrize(
    ("version", "release"), [("5.24.0", (5, 24, 0)), ("5.24.0.dev0", (5, 24, 0)), ("2.13.0+cpu", (2, 13, 0))]
)
def test_release_reads_the_numeric_part(version: str, release: tuple[int, ...]) -> None:
    assert versions._release(version) == release
