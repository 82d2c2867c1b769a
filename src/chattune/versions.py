"""The library versions chattune's code needs, each with what needs it, checked where it runs.

``pyproject.toml``'s lower bounds must be at least these (tests/unit/test_versions.py checks it), and every
``chattune`` command checks the installed versions first: an older library fails with one clear line instead of a
wrong result (a transformers before 5.24 ignores the serving engine's ``cache=`` and generates garbage).
"""

from __future__ import annotations

from importlib import metadata

from chattune.errors import DependencyError

# distribution -> (the lowest version that works, what needs it). Only floors with a known cause are here; the
# other bounds in pyproject.toml are the versions chattune was tested with.
NEEDS: dict[str, tuple[str, str]] = {
    "transformers": (
        "5.24",
        "the serving engine passes the KV cache as `cache=` (earlier 5.x drops it silently: garbage output)",
    ),
}


def _release(version: str) -> tuple[int, ...]:
    """The numeric release part of a version string: ``5.24.0.dev0`` -> (5, 24, 0)."""
    parts: list[int] = []
    for piece in version.split("+")[0].split("."):
        digits = "".join(c for c in piece if c.isdigit()) if piece[:1].isdigit() else ""
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def too_old() -> list[str]:
    """One line per installed library older than chattune needs (a library not installed is left to pip)."""
    found = []
    for dist, (floor, why) in NEEDS.items():
        try:
            installed = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
        if _release(installed) < _release(floor):
            found.append(f"{dist} {installed} is installed; chattune needs {dist}>={floor}: {why}")
    return found


def check() -> None:
    """Raise if an installed library is older than chattune's code needs.

    Raises:
        DependencyError: Each library too old, what needs it, and the pip command that fixes it.
    """
    lines = too_old()
    if lines:
        fix = " ".join(f"'{d}>={NEEDS[d][0]}'" for d in NEEDS if any(line.startswith(f"{d} ") for line in lines))
        raise DependencyError("; ".join(lines), remedy=f"pip install -U {fix}")
