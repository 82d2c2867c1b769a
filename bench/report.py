"""Regenerate the "Runs on record" part of docs/benchmarks.md from the JSON files under bench/results/.

    python bench/report.py            # rewrite the part between the markers
    python bench/report.py --check    # exit 1 when the docs are not what the JSON files give (the test suite runs it)

Each file becomes one subsection: the command that reproduces it, the commit it was measured at, the machine and
library versions, then every figure it holds - min / median / max where it was repeated - so that a figure in the
docs always names the run it came from. The prose around the markers (what the figures mean, against which goals)
is written by hand and quotes these tables.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
DOCS = ROOT / "docs" / "benchmarks.md"
BEGIN = "<!-- bench/report.py: begin (generated from bench/results/*.json; do not edit by hand) -->"
END = "<!-- bench/report.py: end -->"
SPREAD = {"min", "median", "max"}
# Context that is not a figure: shown in the heading lines, not the tables.
SKIP = {"commit", "versions", "machine", "run", "runs", "command", "settings"}
# How each benchmark's files were made, by the start of the file name, when the file does not say it itself.
SERVE_LOAD_16 = ".venv/bin/python bench/serve_load.py --model smollm2-135m-instruct --clients 16 --seconds 60"
COMMANDS = {
    "train_throughput-gpu-dryrun": "DRY_RUN=1 bench/gpu_run.sh",
    "train_throughput-gpu": "bench/gpu_run.sh",
    "train_throughput-quick": ".venv/bin/python bench/train_throughput.py --quick --repeats 3 --json",
    "train_throughput": ".venv/bin/python bench/train_throughput.py --repeats 3 --json",
    "validate_throughput-quick": ".venv/bin/python bench/validate_throughput.py --quick --repeats 3 --json",
    "validate_throughput": ".venv/bin/python bench/validate_throughput.py --size-mb 1024 --repeats 3 --json",
    "serve_throughput-quick-turns3": ".venv/bin/python bench/serve_throughput.py --quick --turns 3 --repeats 3 --json",
    "serve_throughput-quick": ".venv/bin/python bench/serve_throughput.py --quick --repeats 3 --json",
    "serve_throughput-quick-plainlinear": ".venv/bin/python bench/serve_throughput.py --quick --repeats 3 "
    "--plain-linear --json",
    "serve_throughput-quick-range05": ".venv/bin/python bench/serve_throughput.py --quick --range-ratio 0.5 "
    "--repeats 3 --json",
    "serve_throughput-quick-range05-plainlinear": ".venv/bin/python bench/serve_throughput.py --quick "
    "--range-ratio 0.5 --repeats 3 --plain-linear --json",
    "serve_throughput": ".venv/bin/python bench/serve_throughput.py --json",
    "shared_adapters": ".venv/bin/python bench/shared_adapters.py --json",
    "ray_overhead": ".venv/bin/python bench/ray_overhead.py --repeats 3 --json",
    "ray_overhead-steps20": ".venv/bin/python bench/ray_overhead.py --steps 20 --repeats 2 --json",
    "serve_load-smollm2": ".venv/bin/python bench/serve_load.py --model smollm2-135m-instruct --json",
    "serve_load-smollm2-instances2": f"{SERVE_LOAD_16} --instances 2 --max-concurrent 8 --json",
    "serve_load-smollm2-instances2-omp2": f"OMP_NUM_THREADS=2 {SERVE_LOAD_16} --instances 2 --max-concurrent 8 --json",
    "serve_load-smollm2-instances1": f"{SERVE_LOAD_16} --instances 1 --max-concurrent 16 --json",
    "serve_load-smollm2-bluegreen": f"{SERVE_LOAD_16} --deployments 2 --max-concurrent 8 --json",
    "serve_load-smollm2-bluegreen-omp2": f"OMP_NUM_THREADS=2 {SERVE_LOAD_16} --deployments 2 --max-concurrent 8 --json",
    "export_gguf": ".venv/bin/python bench/export_gguf.py --json",
    "serve_mixed_ab-join": ".venv/bin/python bench/serve_mixed_ab.py --join-only --rounds 6 --json",
    "serve_mixed_ab": ".venv/bin/python bench/serve_mixed_ab.py --rounds 4 --json",
}


def command_of(path: Path, doc: dict[str, Any]) -> str:
    if isinstance(doc.get("command"), str):
        return str(doc["command"])
    matches = [prefix for prefix in COMMANDS if path.stem.startswith(prefix)]
    return COMMANDS[max(matches, key=len)] if matches else f"(see the script that wrote {path.name})"


def figures(doc: Any, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(name, min, median, max) for repeated figures and (name, "", value, "") for single ones, in document order."""
    rows: list[tuple[str, str, str, str]] = []
    if isinstance(doc, dict):
        if set(doc) >= SPREAD:
            return [(prefix, _fmt(doc["min"]), _fmt(doc["median"]), _fmt(doc["max"]))]
        for key, value in doc.items():
            if key in SKIP:
                continue
            rows += figures(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(doc, list):
        for i, item in enumerate(doc):
            rows += figures(item, f"{prefix}[{i}]")
    elif doc is not None:
        rows.append((prefix, "", _fmt(doc), ""))
    return rows


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1000 else f"{value:,.1f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value).replace("|", "\\|")


def section(path: Path) -> str:
    doc = json.loads(path.read_text(encoding="utf-8"))
    info = doc.get("run", doc)
    machine, versions = info.get("machine", {}), info.get("versions", {})
    lines = [
        f"### `bench/results/{path.name}`",
        "",
        f"Command: `{command_of(path, doc)}`. Commit `{info.get('commit', 'unknown')}`; "
        f"{machine.get('cpus', '?')} CPUs ({machine.get('cpu', '?')}; {' '.join(machine.get('isa', [])) or 'no AVX2'})"
        + (f"; {', '.join(f'{k} {v}' for k, v in versions.items())}" if versions else "")
        + ".",
    ]
    settings = _walk_settings(doc)
    if settings:
        lines.append("Settings: " + "; ".join(f"`{k}` = `{json.dumps(v)}`" for k, v in settings) + ".")
    lines += ["", "| figure | min | median (or value) | max |", "|---|---|---|---|"]
    lines += [f"| {name} | {low} | {mid} | {high} |" for name, low, mid, high in figures(doc)]
    return "\n".join(lines) + "\n"


def _walk_settings(doc: Any, prefix: str = "") -> list[tuple[str, Any]]:
    found: list[tuple[str, Any]] = []
    if isinstance(doc, dict):
        for key, value in doc.items():
            name = f"{prefix}.{key}" if prefix else key
            if key == "settings":
                found.append((name, value))
            elif key not in SKIP:
                found += _walk_settings(value, name)
    return found


def generated() -> str:
    files = sorted(RESULTS.glob("*.json"))
    body = "\n".join(section(p) for p in files)
    return f"{BEGIN}\n\n{body}\n{END}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/benchmarks.md is not up to date")
    args = parser.parse_args()
    text = DOCS.read_text(encoding="utf-8")
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{DOCS}: the markers are missing; put these two lines where the runs go:\n{BEGIN}\n{END}")
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    new = head + generated() + tail
    if args.check:
        if new != text:
            print(f"{DOCS} is not what bench/results/*.json give: run `python bench/report.py`", file=sys.stderr)
            raise SystemExit(1)
        return
    DOCS.write_text(new, encoding="utf-8")


if __name__ == "__main__":
    main()
