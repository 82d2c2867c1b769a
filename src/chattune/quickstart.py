"""The seed notebook's nine steps in one call.

catalog -> compute -> data -> job -> register -> endpoint -> deployment "demo" (traffic 100) -> invoke with a
sample_score.json -> delete.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from chattune import catalog, compute
from chattune.data import demo
from chattune.data.conversations import GenerationCase, generation_case, read_conversations
from chattune.entities import DeploymentSettings, Task
from chattune.errors import ComputeError, UserError
from chattune.pipeline.config import JobSpec, parse_spec
from chattune.schemas import EndpointKeys
from chattune.workspace import Workspace

RECIPE_DIR = "recipes"  # package data: one job YAML per model, default.yaml for the rest


@dataclass(frozen=True)
class Recipe:
    """A quickstart recipe: the demo dataset's size and a job spec without model and data (shipped YAML)."""

    name: str
    rows: int
    job: dict[str, Any]

    def spec(self, model: str, data: dict[str, Any], **fields: Any) -> JobSpec:
        """The job spec for ``model`` on ``data``, through the job YAML's parser and checks."""
        return parse_spec({**self.job, **fields, "model": model, "data": data}, source=f"{RECIPE_DIR}/{self.name}.yaml")


def recipe_names() -> list[str]:
    """The shipped recipes (file stems)."""
    files = resources.files("chattune").joinpath(RECIPE_DIR).iterdir()
    return sorted(f.name.removesuffix(".yaml") for f in files if f.name.endswith(".yaml"))


def load_recipe(model: str, task: Task = Task.CHAT_COMPLETION) -> Recipe:
    """The recipe for ``model`` and ``task``, or the default one; its job sections are validated as a job spec.

    A preference recipe is ``NAME-preference.yaml`` (``default-preference.yaml``).
    """
    suffix = "" if task == Task.CHAT_COMPLETION else f"-{task.value}"
    name = f"{model}{suffix}" if f"{model}{suffix}" in recipe_names() else f"default{suffix}"
    raw = yaml.safe_load(resources.files("chattune").joinpath(RECIPE_DIR, f"{name}.yaml").read_text(encoding="utf-8"))
    recipe = Recipe(name=name, rows=int(raw["rows"]), job=dict(raw["job"]))
    recipe.spec(model, {"train": "train_sft.jsonl"})  # a bad recipe fails here, every problem listed
    return recipe


SPLITS = ("train_sft", "test_sft", "test_gen")
# A preference data set in UltraFeedback-binarized's layout: train_prefs and test_prefs.
PREFERENCE_SPLITS = demo.PREFERENCE_SPLITS


def _dataset_dir(ws: Workspace, dataset: str, rows: int, percent: int, task: Task) -> Path:
    """'demo', a directory holding the split files, or a dataset to download (hub id or hub-layout directory)."""
    preference = task == Task.PREFERENCE
    splits = PREFERENCE_SPLITS if preference else SPLITS
    if dataset == "demo":
        out = ws.settings.home / "datasets" / (f"demo-preference-{rows}" if preference else f"demo-{rows}")
        (demo.write_preferences if preference else demo.write)(out, rows=rows)
        return out
    path = Path(dataset).expanduser()
    if path.is_dir() and any((path / f"{s}.jsonl").exists() for s in splits):
        target = path.resolve()
    else:
        from chattune.data.download import download

        target = ws.settings.home / "datasets" / f"{dataset.strip('/').replace('/', '--')}-{percent}pct"
        download(dataset, target, percent=percent, splits=list(splits))
    missing = [s for s in splits if not (target / f"{s}.jsonl").exists()]
    if missing:
        layout = "UltraFeedback-binarized's" if preference else "ultrachat_200k's"
        raise UserError(
            f"--dataset {dataset}: missing {', '.join(f'{m}.jsonl' for m in missing)}",
            remedy=f"Give a directory with {layout} split files {', '.join(splits)}; or use demo.",
        )
    return target


def _preference_sample(path: Path, seed: int) -> GenerationCase:
    """One held-out pair's prompt as the request, its preferred answer as the reference."""
    from chattune.data.preferences import read_pairs

    pairs = read_pairs(path)
    if not pairs:
        raise UserError(f"{path}: no preference pair to ask", remedy="Give test_prefs rows with a prompt and answers.")
    pair = random.Random(seed).choice(pairs)
    return GenerationCase(line=pair.line, prompt=pair.prompt, reference=pair.chosen[0]["content"])


def _sample(path: Path, seed: int) -> GenerationCase:
    """The seed's step 8: one row of test_gen as a request, without its reference answer when it ends on one.

    ultrachat_200k's test_gen rows end on the user's question: that row is sent whole.
    """
    cases = [c for c in (generation_case(r) for r in read_conversations(path)) if c is not None]
    if not cases:
        raise UserError(f"{path}: no row to ask", remedy="Give test_gen rows that end on a user turn or an answer.")
    return random.Random(seed).choice(cases)


def _question(case: GenerationCase) -> str:
    """The last user turn of the request."""
    return next((m["content"] for m in reversed(case.prompt) if m["role"] == "user"), case.prompt[-1]["content"])


def run(
    ws: Workspace,
    *,
    model: str = catalog.DEFAULT_MODEL,
    dataset: str = "demo",
    percent: int = 5,
    max_train_rows: int | None = None,
    keep_endpoint: bool = False,
    task: Task = Task.CHAT_COMPLETION,
    progress: Callable[[str], None] = lambda s: None,
) -> dict[str, Any]:
    """Run the seed notebook's steps in this workspace and return what each produced.

    Args:
        ws: The workspace to run in.
        model: The catalog model to fine-tune (built-in, or imported into the workspace).
        dataset: ``demo`` (the generated demo task), a directory holding the split files, or a data set to download
            (hub id or hub-layout directory).
        percent: The share (in percent) of a downloaded data set that is fetched.
        max_train_rows: Use only the first N training rows (quick runs).
        keep_endpoint: Leave the endpoint running instead of deleting it at the end.
        task: ``chat_completion`` (supervised, the seed's) or ``preference`` (DPO on preference pairs: the demo's
            pairs, or a directory / hub data set with train_prefs and test_prefs).
        progress: Called with one line per step.

    Returns:
        The job, its metrics, the registered model, the endpoint, the sample request and its response, and warnings.
    """
    timestamp = str(int(time.time()))
    recipe = load_recipe(model, task)
    preference = task == Task.PREFERENCE
    planned = recipe.spec(model, {"train": "train.jsonl"})

    progress("1/9 workspace: " + str(ws.settings.home))
    entry = ws.catalog.get(model)
    progress(f"2/9 model: {entry.display_name} version {entry.version} ({entry.id})")

    info = compute.detect()
    check = compute.check(
        entry,
        info,
        lora=True,
        seq_len=planned.training.max_seq_length,
        # DPO runs each pair's two answers in one batch
        batch_size=planned.training.per_device_train_batch_size * (2 if preference else 1),
    )
    progress(
        f"3/9 compute: {info.size}, {info.cpu_cores} cores, {info.ram_gb} GB RAM, {len(info.gpus)} GPU(s); "
        f"needs ~{check.estimated_memory_gb} GB"
    )
    if not check.ok:
        raise ComputeError("; ".join(check.messages), remedy="See `chattune compute check --model " + model + "`.")

    data_dir = _dataset_dir(ws, dataset, recipe.rows, percent, task)
    progress(f"4/9 data: {data_dir}")

    if preference:
        files = {"train": str(data_dir / "train_prefs.jsonl"), "test": str(data_dir / "test_prefs.jsonl")}
    else:
        files = {
            "train": str(data_dir / "train_sft.jsonl"),
            "test": str(data_dir / "test_sft.jsonl"),
            "generation_test": str(data_dir / "test_gen.jsonl"),
        }
    spec = recipe.spec(model, {**files, "max_train_rows": max_train_rows}, experiment_name=f"{task.value}_{entry.name}")
    job, warnings = ws.jobs.create(spec)
    progress(f"5/9 job {job.id}: {job.display_name}")
    job = ws.jobs.stream(job.id, lambda line: progress("    " + line))
    if str(job.status) != "succeeded":
        raise UserError(
            f"job {job.id} {job.status}: {job.error.message if job.error else ''}",
            remedy=f"See `chattune jobs show {job.id}` and the step logs under {ws.jobs.job_dir(job.id)}.",
        )

    demo_name = f"{entry.name}-{'dpo-' if preference else ''}demo"
    mv = ws.registry.register(job.id, name=demo_name if dataset == "demo" else None, version=timestamp)
    progress(f"6/9 registered {mv.id} ({mv.kind}, base {mv.base_model})")

    endpoint_name = f"{'preference' if preference else 'ultrachat'}-completion-{timestamp}"
    ep, keys = ws.endpoints.create(endpoint_name, description=f"Online endpoint for {mv.name}")
    deleted = False
    try:
        ws.endpoints.deploy(endpoint_name, "demo", mv.id, DeploymentSettings(request_timeout_ms=90_000))
        ep = ws.endpoints.set_traffic(endpoint_name, {"demo": 100})
        progress(f"7/9 endpoint {endpoint_name}: deployment demo, traffic demo=100, {ep.scoring_uri(ws.settings.host)}")

        if preference:
            sample = _preference_sample(data_dir / "test_prefs.jsonl", seed=int(timestamp))
        else:
            sample = _sample(data_dir / "test_gen.jsonl", seed=int(timestamp))
        request = {
            "input_data": {
                "input_string": [sample.prompt],
                "parameters": {"temperature": 0.6, "top_p": 0.9, "do_sample": True, "max_new_tokens": 200},
            },
            "params": {},
        }
        request_file = ws.settings.home / "datasets" / "sample_score.json"
        request_file.write_text(json.dumps(request, indent=2), encoding="utf-8")
        response = ws.endpoints.invoke(endpoint_name, request_file, keys["primary"], deployment="demo")
        progress(f"8/9 invoke: {_question(sample)!r} -> {response[0]['output']!r}")
    finally:
        if not keep_endpoint:
            ws.endpoints.delete(endpoint_name)
            deleted = True
            progress(f"9/9 deleted endpoint {endpoint_name}")
    result = {
        "job": {"id": job.id, "status": str(job.status), "display_name": job.display_name},
        "metrics": {"base": job.metrics.get("base", {}), "tuned": job.metrics.get("tuned", {})},
        "model": {"name": mv.name, "version": mv.version},
        "endpoint": {"name": endpoint_name, "scoring_uri": ep.scoring_uri(ws.settings.host), "deleted": deleted},
        "request": {"question": _question(sample), "reference": sample.reference},
        "response": response,
        "warnings": warnings,
    }
    if keep_endpoint:
        result["endpoint"]["keys"] = EndpointKeys.from_key_types(keys).model_dump()
    return result
