"""The benchmarks' dry runs: each runs its real code path on a small input and prints well-formed JSON with the run
information every figure must carry (commit, versions, machine, min/median/max). Never a timing assertion: these
keep the scripts from rotting; the figures come from the full runs in docs/benchmarks.md."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from chattune.processes import child_env
from tests.conftest import shared_fixture

pytestmark = [pytest.mark.integration, pytest.mark.bench]
ROOT = Path(__file__).resolve().parents[2]


def _run(home: Path, *command: str, env: dict[str, str] | None = None, timeout: int = 600) -> str:
    done = subprocess.run(
        list(command), cwd=ROOT, capture_output=True, text=True, timeout=timeout,
        env=child_env(CHATTUNE_HOME=str(home), **(env or {})),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _has_run_info(doc: dict[str, Any]) -> None:
    assert doc["commit"] and set(doc["versions"]) == {"torch", "transformers", "trl", "peft"}
    assert doc["machine"]["cpus"] >= 1 and isinstance(doc["machine"]["isa"], list)


def test_validate_throughput_on_a_clean_file_and_one_with_5_percent_bad_rows(home: Path) -> None:
    out = _run(home, sys.executable, "bench/validate_throughput.py", "--size-mb", "1", "--repeats", "1", "--json")
    doc = json.loads(out)
    _has_run_info(doc)
    assert doc["bad_rows"] == doc["rows"] // 20
    assert doc["clean"]["chattune"]["bad_rows"] == doc["clean"]["json_loop"]["bad_rows"] == 0
    bad = doc["bad_5pct"]
    # chattune and the cookbook's loop find every broken row; pandas cannot read the file past its broken line
    assert bad["chattune"]["bad_rows"] == bad["json_loop"]["bad_rows"] == doc["bad_rows"]
    assert "ValueError" in bad["pandas"]["failed"] and bad["speedup"] is None
    for kind in ("chattune", "pandas", "json_loop"):
        assert set(doc["clean"][kind]["rows_per_s_spread"]) == {"min", "median", "max"}


def test_serve_throughput_dry_runs_its_five_servers_on_the_tiny_model_with_two_turn_chats(home: Path) -> None:
    args = ["--model", "tiny-test", "--clients", "2", "--requests-per-client", "2", "--lone-requests", "1"]
    args += ["--max-tokens", "4", "--range-ratio", "0.5", "--repeats", "1", "--turns", "2", "--plain-linear", "--json"]
    out = _run(home, sys.executable, "bench/serve_throughput.py", *args)
    doc = json.loads(out)
    _has_run_info(doc)
    assert doc["model"] == "tiny-test" and doc["repeats"] == 1 and doc["turns"] == 2 and doc["range_ratio"] == 0.5
    for kind in ("chattune", "batched", "baseline", "chattune_no_prefix_cache", "chattune_plain_linear"):
        assert doc[kind]["errors"] == 0 and len(doc[kind]["runs"]) == 1, doc[kind]
        assert set(doc[kind]["tokens_per_s"]) == {"min", "median", "max"}
    ratios = {"ratio_tokens_per_s", "ratio_vs_batched", "p50_ratio", "ratio_prefix_cache", "ratio_packed_linear"}
    assert ratios <= set(doc)
    assert 0 <= doc["chattune"]["cached_prompt_share"] <= 1
    # the step costs read from chattune's /metrics: 1-row steps while alone, 2-row ones under load (or the most
    # rows seen, should one client's answers all end before the other's request arrives)
    steps = doc["chattune"]["runs"][0]["steps"]
    assert steps["rows"] in {1, 2} and steps["step_1_ms"] > 0 and steps["step_rows_ms"] > 0
    assert doc["step_ratio"]["median"] == steps["step_ratio"] and doc["batching_bound"]["median"] > 0


def test_serve_mixed_ab_dry_runs_both_variants_on_the_tiny_model(home: Path) -> None:
    args = ["--model", "tiny-test", "--clients", "3", "--requests-per-client", "2", "--rounds", "2", "--json"]
    doc = json.loads(_run(home, sys.executable, "bench/serve_mixed_ab.py", *args))
    _has_run_info(doc)
    assert doc["mixed_steps_supported"] and doc["rounds"] == 2
    for variant in ("mixed", "separate"):
        assert len(doc[variant]["runs"]) == 2 and set(doc[variant]["tokens_per_s"]) == {"min", "median", "max"}
    # the variants ran as named: joins went into decoding steps in one, into forward passes of their own in the other
    assert all("_prefill" not in run["forwards"] or run["forwards"]["_mixed"]["count"] for run in doc["mixed"]["runs"])
    assert all("_mixed" not in run["forwards"] for run in doc["separate"]["runs"])
    args = ["--model", "tiny-test", "--join-only", "--rounds", "1", "--json"]
    join = json.loads(_run(home, sys.executable, "bench/serve_mixed_ab.py", *args))["one_join"]
    assert set(join["mixed_ms"]) == set(join["separate_ms"]) == {"min", "median", "max"} and join["median_ratio"] > 0


def test_the_gpu_script_dry_runs_on_a_cpu_with_a_shrunk_phi3(home: Path, tmp_path: Path) -> None:
    shared_fixture("phi3_mini_tokenizer")
    shared_fixture("assistant_dialogs_azureml_oai")
    env = {"DRY_RUN": "1", "PYTHON": sys.executable, "PATH": os.environ["PATH"]}
    written = Path(_run(home, "bash", "bench/gpu_run.sh", str(tmp_path), env=env, timeout=900).strip().splitlines()[-1])
    doc = json.loads(written.read_text())
    _has_run_info(doc)
    assert doc["arch"] == "phi3-mini-4k" and doc["precision"] in {"bf16", "fp32"}
    section = doc.get("lora", doc)  # one mode: its figures are at the top
    keys = {"chattune", "baseline", "baseline_tuned", "ratio_tokens_per_s", "ratio_vs_tuned", "mfu", "mfu_fp32"}
    assert keys <= set(section)
    assert section["baseline_tuned"]["settings"] == {
        "padding_free": True, "max_length": None, "gradient_checkpointing": False,
    }  # fmt: skip
    contenders = {r["contender"] for r in section["runs"]}
    assert contenders == {"chattune", "baseline", "baseline_tuned_padding_free_no_checkpointing"}
    assert doc["peaks"]["fp32"]["kernel"].startswith("fp32")
