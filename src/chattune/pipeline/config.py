"""The job spec: Azure ``chat_completion_pipeline`` parameter names and defaults, in one typed place.

``training`` and ``optimization`` are the typed parameter models; what the user gave is their ``model_fields_set``
(the resolved config, chattune.pipeline.resolved, fills the rest from the catalog and the defaults). Every problem
in a spec is reported at once, with the YAML line and the closest valid key for a typo.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ModelWrapValidatorHandler, ValidationError, field_serializer, model_validator

from chattune.data.chat_formats import ChatFormat
from chattune.entities import COMPUTE_NAME_PATTERN, LOCAL_COMPUTE, Task
from chattune.errors import ConfigError, Problem
from chattune.training.params import OptimizationParams, Strict, TrainingParams


class DataSpec(Strict):
    """The data files of a job."""

    train: str = Field(
        description="Training file: jsonl, json, parquet or csv, in a chat format (openai messages, ultrachat, "
        "sharegpt, alpaca, dolly, prompt_completion)."
    )
    validation: str | None = Field(None, description="Validation file; default: the last 20% of train.")
    test: str | None = Field(None, description="Test file for loss and perplexity.")
    generation_test: str | None = Field(None, description="Conversations whose last assistant turn is regenerated.")
    max_train_rows: int | None = Field(None, gt=0, description="Use only the first N training rows (quick runs).")
    # One format for every file of the job, as `chattune data validate --format` takes it; unset, each file's is
    # detected from the keys of its rows (a file may be alpaca and another openai).
    format: ChatFormat | None = Field(None, description="The chat format of every data file; default: detected.")


class PreferenceSpec(Strict):
    """How a ``task: preference`` job tunes on preference pairs (TRL's DPO trainer)."""

    method: Literal["dpo"] = Field("dpo", description="Direct Preference Optimization (Rafailov et al., 2023).")
    # OpenAI's dpo hyperparameter `beta` and TRL's default: how far the tuned model may move from the reference.
    beta: float = Field(0.1, gt=0, description="DPO's beta: the weight of the KL penalty to the reference model.")


class EvaluationSpec(Strict):
    """How the evaluate step runs: rows used, generation budget and batch size."""

    max_rows: int = Field(100, gt=0, description="Rows of the test files used (first N).")
    max_new_tokens: int = Field(32, gt=0, description="Generation budget per answer on generation_test.")
    batch_size: int = Field(16, gt=0)


class ResourcesSpec(Strict):
    """Where the finetune's processes run on a compute target: Azure's ``instance_count`` x processes per instance.

    On a Ray target the finetune runs as a Ray Train ``TorchTrainer`` with ``instance_count *
    processes_per_instance`` workers, each asking Ray for ``cpus_per_process`` CPUs (and one GPU with ``use_gpu``).
    On ``local`` the training parameter ``number_of_gpu_to_use_finetuning`` decides (torchrun), as before.
    """

    instance_count: int = Field(1, ge=1, description="Nodes (instances) the finetune spans.")
    processes_per_instance: int = Field(1, ge=1, description="Training processes per instance.")
    use_gpu: bool = Field(False, description="One GPU per training process (NCCL); else CPU processes (gloo).")
    cpus_per_process: float = Field(1.0, gt=0, description="CPUs Ray reserves for each training process.")

    @property
    def workers(self) -> int:
        """Training processes in all: instances times processes per instance."""
        return self.instance_count * self.processes_per_instance


class JobSettings(Strict):
    """How the pipeline runs: step caching, failure handling, and whether downgrades are errors (``strict``)."""

    force_rerun: bool = False
    continue_on_step_failure: bool = False
    # On a Ray target: how often Ray restarts the training workers after one dies (FailureConfig.max_failures).
    max_failures: int = Field(2, ge=0)
    # strict: options this machine cannot honour (DeepSpeed or fp16 without a GPU) are errors, not downgrades.
    strict: bool = False


class JobSpec(Strict):
    """A fine-tuning job as the user gives it (the job YAML): model, data, training and optimization parameters."""

    model: str = "smollm2-135m-instruct"
    # chat_completion: supervised on conversations (Azure's task); preference: DPO on preference pairs.
    task: Task = Task.CHAT_COMPLETION
    experiment_name: str = "chat_completion_demo"
    display_name: str | None = None
    # A compute target of the workspace (`chattune compute list`); `local` is this machine.
    compute: str = Field(LOCAL_COMPUTE, pattern=COMPUTE_NAME_PATTERN)
    resources: ResourcesSpec = Field(default_factory=lambda: ResourcesSpec())
    data: DataSpec
    # Only what the user gave is set (``model_fields_set``); the job record stores just that, so a stored spec
    # read back still tells the user's values from the defaults.
    training: TrainingParams = Field(default_factory=lambda: TrainingParams())
    optimization: OptimizationParams = Field(default_factory=lambda: OptimizationParams())
    evaluation: EvaluationSpec = Field(default_factory=lambda: EvaluationSpec())
    preference: PreferenceSpec = Field(default_factory=lambda: PreferenceSpec())
    settings: JobSettings = Field(default_factory=lambda: JobSettings())

    @field_serializer("training", "optimization", "preference", mode="plain")
    def _user_given(self, params: Strict) -> dict[str, Any]:
        return params.model_dump(mode="json", exclude_unset=True)

    @model_validator(mode="wrap")
    @classmethod
    def _every_problem(cls, data: Any, handler: ModelWrapValidatorHandler[JobSpec]) -> JobSpec:
        """A spec built in Python fails as the YAML does: a ConfigError listing every problem, closest keys."""
        try:
            spec = handler(data)
        except ValidationError:
            checked(data, "job spec")  # raises ConfigError when it finds what pydantic found
            raise
        problems = cross_field_problems(
            spec.training.model_dump(include=spec.training.model_fields_set),
            spec.optimization.model_dump(include=spec.optimization.model_fields_set),
        )
        if spec.task == Task.CHAT_COMPLETION and spec.preference.model_fields_set:
            problems.append(
                Problem(
                    "preference",
                    "applies to preference jobs; set task: preference to tune on pairs with it",
                    "invalid_combination",
                )
            )
        if spec.task == Task.PREFERENCE:
            for name in ("generation_test", "format"):
                if getattr(spec.data, name) is not None:
                    problems.append(
                        Problem(
                            f"data.{name}",
                            "applies to chat_completion jobs; a preference job reads prompt/chosen/rejected pairs and "
                            "is evaluated on its held-out pairs",
                            "invalid_combination",
                        )
                    )
        if problems:
            raise ConfigError("job spec", problems)
        return spec


PARAM_MODELS: dict[str, type[Strict]] = {"training": TrainingParams, "optimization": OptimizationParams}


def _line_index(text: str) -> dict[str, int]:
    """Map dotted key paths to their 1-based YAML line, for error messages."""
    index: dict[str, int] = {}

    def walk(node: yaml.Node, prefix: str) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                path = f"{prefix}.{key.value}" if prefix else str(key.value)
                index[path] = key.start_mark.line + 1
                walk(value, path)

    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return index
    if root is not None:
        walk(root, "")
    return index


def _closest(key: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    return f"; did you mean `{close[0]}`?" if close else f"; valid keys: {', '.join(sorted(valid))}"


def parse_spec(raw: Any, source: str = "<job>", text: str | None = None) -> JobSpec:
    """Validate a raw mapping into a JobSpec, collecting every problem before raising ConfigError."""
    return JobSpec.model_validate(checked(raw, source, text))


def checked(raw: Any, source: str = "<job>", text: str | None = None) -> dict[str, Any]:
    """Check a raw job mapping: every problem at once, with its YAML line (given ``text``) and the closest key.

    Returns:
        The mapping to validate into a JobSpec, the parameter sections as validated (YAML reads ``-1e-5`` as a
        string; pydantic makes it a float).

    Raises:
        ConfigError: Every problem found.
    """
    lines = _line_index(text) if text else {}

    def where(path: str) -> str:
        line = lines.get(path)
        return f"{source}:{line}: {path}" if line else f"{source}: {path}"

    if not isinstance(raw, dict):
        raise ConfigError(source, [Problem(source, "the job file must be a YAML mapping (see CLI.md)")])
    problems: list[Problem] = []
    validated: dict[str, dict[str, Any]] = {}  # the parameter sections: what the user gave, as validated
    sections: dict[str, type[BaseModel]] = {
        "data": DataSpec,
        "evaluation": EvaluationSpec,
        "settings": JobSettings,
        "resources": ResourcesSpec,
        **PARAM_MODELS,
    }
    top_level = list(JobSpec.model_fields)
    for key in raw:
        if key not in top_level:
            problems.append(Problem(where(str(key)), f"unknown key{_closest(str(key), top_level)}", "unknown_key"))
    for section, model in sections.items():
        body = raw.get(section)
        if body is None:
            continue
        if not isinstance(body, dict):
            problems.append(Problem(where(section), "must be a mapping of keys to values", "invalid_type"))
            continue
        valid = list(model.model_fields)
        for key in body:
            if key not in valid:
                problems.append(
                    Problem(where(f"{section}.{key}"), f"unknown key{_closest(str(key), valid)}", "unknown_key")
                )
        known = {k: v for k, v in body.items() if k in valid}
        validated[section] = {}
        try:
            if section in PARAM_MODELS:
                # Validate only what the user gave: defaults are applied at resolution time.
                validated[section] = model.model_validate(known).model_dump(include=set(known))
            elif section != "data" or "train" in known:
                model.model_validate(known)
        except ValidationError as exc:
            for err in exc.errors():
                loc = ".".join(str(p) for p in err["loc"])
                problems.append(Problem(where(f"{section}.{loc}"), err["msg"], "invalid_value"))
            if section in PARAM_MODELS:
                # Keep the values that are valid on their own, so the cross-field checks still see them.
                bad = {str(err["loc"][0]) for err in exc.errors() if err["loc"]}
                good = {k: v for k, v in known.items() if k not in bad}
                validated[section] = model.model_validate(good).model_dump(include=set(good))
    compute = raw.get("compute", LOCAL_COMPUTE)
    if not isinstance(compute, str) or not re.match(COMPUTE_NAME_PATTERN, compute):
        problems.append(
            Problem(
                where("compute"),
                f"{compute!r} is not a compute target name (lowercase letters, digits and -, starting with a letter); "
                "see `chattune compute list`",
                "invalid_value",
            )
        )
    if "data" not in raw or not isinstance(raw.get("data"), dict) or "train" not in raw["data"]:
        problems.append(Problem(where("data.train"), "required: the training file", "missing_key"))
    problems += cross_field_problems(validated.get("training", {}), validated.get("optimization", {}), where)
    if problems:
        raise ConfigError(source, problems)
    cleaned = {k: v for k, v in raw.items() if k in top_level}
    cleaned.update({s: validated[s] for s in PARAM_MODELS if s in validated})
    return cleaned


def cross_field_problems(training: Any, optimization: Any, where: Any = lambda p: p) -> list[Problem]:
    """Azure's hard errors worth keeping, as problems.

    Checked on user-given values (JobSpec's validator, with YAML lines in ``checked``) and on the resolved values
    (ResolvedConfig's validator).
    """
    problems: list[Problem] = []
    if not isinstance(training, dict) or not isinstance(optimization, dict):
        return problems
    lr = training.get("learning_rate")
    if isinstance(lr, (int, float)) and lr <= 0:
        problems.append(Problem(where("training.learning_rate"), "must be > 0 (Azure refuses it too)", "invalid_value"))
    if training.get("apply_early_stopping") and training.get("evaluation_strategy") == "no":
        problems.append(
            Problem(
                where("training.apply_early_stopping"),
                "early stopping needs an evaluation strategy; set evaluation_strategy to epoch or steps",
                "invalid_combination",
            )
        )
    if training.get("auto_find_batch_size") and optimization.get("apply_deepspeed"):
        problems.append(
            Problem(
                where("training.auto_find_batch_size"),
                "cannot be combined with apply_deepspeed; set a per_device_train_batch_size instead",
                "invalid_combination",
            )
        )
    if optimization.get("load_in_4bit") and optimization.get("apply_lora") is False:
        problems.append(
            Problem(
                where("optimization.load_in_4bit"),
                "QLoRA trains LoRA adapters over 4-bit weights; set optimization.apply_lora: true",
                "invalid_combination",
            )
        )
    return problems


def load_spec(path: Path) -> JobSpec:
    """Read and validate a job YAML file. Relative data paths are resolved against the file's directory."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(str(path), [Problem(str(path), "file not found")], remedy="Check the -f path.")
    text = path.read_text(encoding="utf-8")
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(
            str(path), [Problem(at, f"malformed YAML: {getattr(exc, 'problem', exc)}", "invalid_yaml")]
        ) from exc
    spec = parse_spec(raw, source=str(path), text=text)
    base = path.parent.resolve()
    for key in ("train", "validation", "test", "generation_test"):
        value = getattr(spec.data, key)
        if value and not Path(value).is_absolute():
            setattr(spec.data, key, str((base / value).resolve()))
    return spec
