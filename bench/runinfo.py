"""What every benchmark reports beside its figures: the commit, library versions, the machine, and min/median/max.

A figure in docs/benchmarks.md names the run it came from: the commit it was measured at (with ``+dirty`` when the
tree had changes), the versions of torch, transformers, TRL and PEFT, and the CPU (cores, the ISA flags that pick
PyTorch's kernels: AVX2, AVX-512, AVX512-BF16, AMX).
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import statistics
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def commit() -> str:
    """The checkout's commit, ``+dirty`` when tracked files differ from it; "unknown" outside a git checkout."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    head = git("rev-parse", "--short=12", "HEAD") or "unknown"
    return head + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def machine() -> dict[str, Any]:
    """Cores, CPU model and the ISA flags that decide which matmul kernels run."""
    flags: set[str] = set()
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
            elif line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "cpu": model, "isa": [f for f in ISA_FLAGS if f in flags]}


def versions() -> dict[str, str]:
    """Versions of the libraries whose kernels and loops are measured."""
    found = {}
    for name in ("torch", "transformers", "trl", "peft"):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "absent"
    return found


def run_info() -> dict[str, Any]:
    """The commit, versions and machine, for a benchmark's ``--json`` document."""
    return {"commit": commit(), "versions": versions(), "machine": machine()}


def spread(values: list[float], digits: int = 2) -> dict[str, float]:
    """min / median / max of repeated measurements."""
    return {
        "min": round(min(values), digits),
        "median": round(statistics.median(values), digits),
        "max": round(max(values), digits),
    }


def describe(info: dict[str, Any]) -> str:
    """One line for a benchmark's text output."""
    m, v = info["machine"], info["versions"]
    libs = ", ".join(f"{k} {val}" for k, val in v.items())
    return f"commit {info['commit']}; {m['cpus']} CPUs ({m['cpu']}; {' '.join(m['isa']) or 'no AVX2'}); {libs}"
