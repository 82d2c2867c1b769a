"""docs/benchmarks.md's "Runs on record" is what bench/results/*.json give (bench/report.py), so that a figure in the
docs always names the run it came from; and the flattening keeps every repeated figure's min/median/max."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

from report import figures  # noqa: E402


def test_the_docs_are_generated_from_the_result_files() -> None:
    done = subprocess.run([sys.executable, "bench/report.py", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_repeated_figures_keep_their_spread_and_context_is_left_out() -> None:
    doc = {
        "commit": "abc",
        "machine": {"cpus": 2},
        "chattune": {"tokens_per_s": {"min": 1.0, "median": 2.0, "max": 3.5}, "eval_loss": 1.25, "runs": [{"x": 1}]},
        "results": [{"type": "f16", "identical_answers": 20}],
    }
    assert figures(doc) == [
        ("chattune.tokens_per_s", "1", "2", "3.5"),
        ("chattune.eval_loss", "", "1.25", ""),
        ("results[0].type", "", "f16", ""),
        ("results[0].identical_answers", "", "20", ""),
    ]
