"""The package graph: every import (module level or inside a function) goes down the layers, never up or sideways.

The layers, lowest first, are documented in docs/design.md ("Layers"). A package may import its own modules and any
package of a lower layer; two packages of the same layer stay independent of each other.
"""

from __future__ import annotations

import ast
from pathlib import Path

import chattune

ROOT = Path(chattune.__file__).parent

LAYERS: list[set[str]] = [
    {"errors", "preload"},  # preload: the fork server, on the standard library only
    {"settings", "entities", "versions"},
    {"schemas"},  # the wire shapes of the entities: built from them, so one layer above
    {"processes", "store", "tracking", "templates", "inference", "packed_linear"},
    {"training", "data", "mlflow_model", "export"},
    {"catalog"},
    {"compute"},
    {"pipeline", "serving"},
    {"registry"},
    {"endpoints"},
    {"workspace"},
    {"quickstart", "aml"},
    {"studio"},
    {"cli"},
]
RANK = {name: rank for rank, layer in enumerate(LAYERS) for name in layer}


def _unit(module: str) -> str:
    """`chattune.pipeline.steps.finetune` -> `pipeline`; `chattune.errors` -> `errors`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "chattune"


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("chattune")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "chattune":
                found += [(node.lineno, f"chattune.{a.name}") for a in node.names]
            elif node.module.startswith("chattune."):
                found.append((node.lineno, node.module))
    return found


def test_every_package_has_a_layer() -> None:
    modules = {p.stem for p in ROOT.glob("*.py") if p.name != "__init__.py"}
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")}
    units = modules | packages
    assert units - set(RANK) == set(), "add each new package or module to LAYERS (and docs/design.md)"


def test_imports_go_down_the_layers() -> None:
    upward: list[str] = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT)
        if rel.parts == ("__init__.py",):
            continue  # the root package re-exports the public surface from the top
        source = rel.parts[0].removesuffix(".py")
        for line, module in _imports(path):
            target = _unit(module)
            if target == source:
                continue
            if target == "chattune" or RANK[target] >= RANK[source]:
                upward.append(f"{rel}:{line} imports {module} ({source} -> {target})")
    assert not upward, "upward or sideways imports:\n" + "\n".join(upward)
