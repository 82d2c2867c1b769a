"""The resolved config: every training and optimization value of a job, with where it came from.

Built once, when the job is created (``resolve``), and stored in the job record; the runner and every torchrun
worker read it back (``ResolvedConfig.from_record``) instead of resolving again. Precedence: the user's job spec >
the catalog entry's ``model_specific_defaults`` > the built-in defaults > a downgrade this machine forces (DeepSpeed
or 16-bit without a GPU). Beside the parameters it holds what used to be decided at training time, each with its
source: the mixed precision actually used and the LoRA target modules.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from chattune.errors import ConfigError, Problem
from chattune.pipeline.config import PARAM_MODELS, JobSpec, cross_field_problems
from chattune.training.params import OptimizationParams, TrainingParams

MixedPrecision = Literal["fp32", "bf16", "fp16"]
# Adapting every linear projection: the QLoRA paper's finding that it matches full fine-tuning better than
# attention-only adapters, at a small memory cost. A catalog entry may name its own modules.
DEFAULT_LORA_TARGETS = "all-linear"
# The context length assumed for max_seq_length -1 before the model is at hand (the memory estimate).
ASSUMED_CONTEXT = 4096
# The derived values stored beside the parameters (same record shape: value and source).
DERIVED = ("mixed_precision", "lora_target_modules")


class ResolvedConfig(BaseModel):
    """A job's effective parameters and the source of each.

    A source is ``user``, ``model_specific_defaults``, ``default``, ``downgraded: why``, or a derivation.
    """

    model_config = ConfigDict(frozen=True)

    training: TrainingParams
    optimization: OptimizationParams
    # "16" becomes bf16 where the device computes it natively, else fp16 on a GPU; "32" stays fp32.
    mixed_precision: MixedPrecision = "fp32"
    lora_target_modules: str | list[str] = DEFAULT_LORA_TARGETS
    sources: dict[str, str]

    @model_validator(mode="after")
    def _combination(self) -> ResolvedConfig:
        """The rules across parameters, on the values as resolved (from any source)."""
        problems = combination_problems({**self.training.model_dump(), **self.optimization.model_dump()})
        if problems:
            raise ConfigError("resolved job config", problems)
        return self

    def to_record(self) -> dict[str, dict[str, Any]]:
        """The job record's shape (``jobs show --json``, MLflow): ``{name: {"value": ..., "source": ...}}``."""
        values = {
            **self.training.model_dump(mode="json"),
            **self.optimization.model_dump(mode="json"),
            **{name: getattr(self, name) for name in DERIVED},
        }
        # A job resolved before a parameter existed ran with its default (an older workspace's job read back).
        return {name: {"value": value, "source": self.sources.get(name, "default")} for name, value in values.items()}

    @classmethod
    def from_record(cls, record: dict[str, dict[str, Any]]) -> ResolvedConfig:
        """Read back what ``to_record`` stored (a job created before the derived values existed gets defaults)."""
        sections = {
            section: {k: record[k]["value"] for k in model.model_fields if k in record}
            for section, model in PARAM_MODELS.items()
        }
        derived = {name: record[name]["value"] for name in DERIVED if name in record}
        sources = {name: entry["source"] for name, entry in record.items()}
        sources.update({name: "default" for name in DERIVED if name not in record})
        return cls.model_validate({**sections, **derived, "sources": sources})

    def max_length(self, model_limit: int | None) -> int:
        """The effective sequence length: ``max_seq_length`` capped by the model's context; -1 means the model's.

        Args:
            model_limit: The model's context length; None where it is not known yet (the memory estimate before
                the model is imported), which reads -1 as ``ASSUMED_CONTEXT``.
        """
        wanted = self.training.max_seq_length
        if wanted > 0:
            return min(wanted, model_limit) if model_limit else wanted
        return model_limit or ASSUMED_CONTEXT

    def memory_options(self) -> dict[str, Any]:
        """The options of chattune.compute.check that this config decides (the training memory estimate)."""
        t, o = self.training, self.optimization
        return {
            "lora": o.apply_lora,
            "load_in_4bit": o.load_in_4bit,
            "precision": o.precision,
            "batch_size": t.per_device_train_batch_size,
            "seq_len": self.max_length(None),
            "zero_stage": o.deepspeed_stage if o.apply_deepspeed else 0,
            "world_size": self.world_size,
            # Azure's generated stage-2 config offloads the optimizer to the CPU; a user's JSON is taken as is.
            "offload_optimizer": bool(o.apply_deepspeed and o.deepspeed_stage == 2 and not o.deepspeed_config),
        }

    @property
    def world_size(self) -> int:
        """Training processes: per node times nodes."""
        return self.optimization.number_of_gpu_to_use_finetuning * self.optimization.num_nodes_finetune


def resolve(
    spec: JobSpec,
    model_defaults: dict[str, Any],
    *,
    has_cuda: bool,
    devices: int = 1,
    cpu_bf16: bool = False,
    cuda_bf16: bool = True,
    lora_targets: list[str] | str | None = None,
    lora_targets_source: str | None = None,
) -> tuple[ResolvedConfig, list[str]]:
    """Resolve every training and optimization parameter with its source; return (resolved, warnings).

    Args:
        spec: The validated job spec; its parameter models' ``model_fields_set`` are the user's values.
        model_defaults: The catalog entry's ``model_specific_defaults``.
        has_cuda: This machine has a CUDA GPU.
        devices: The GPUs of this machine, or its CPU cores when it has none (one gloo process per core at most).
        cpu_bf16: The CPU computes bf16 natively, so precision "16" runs as bf16 autocast instead of downgrading.
        cuda_bf16: The GPU computes bf16 (else precision "16" is fp16 there).
        lora_targets: The catalog entry's ``lora_target_modules`` (None: every linear layer).
        lora_targets_source: Where the entry's targets come from (``CatalogEntry.lora_targets_source``): written by
            hand in the built-in catalog, or derived when the user imported the model.

    Raises:
        ConfigError: The resolved combination is invalid or, with ``settings.strict``, something would have to be
            downgraded on this machine.
    """
    resolved: dict[str, dict[str, Any]] = {}
    for section, model in PARAM_MODELS.items():
        params: BaseModel = getattr(spec, section)
        for name, field in model.model_fields.items():
            if name in params.model_fields_set:
                resolved[name] = {"value": getattr(params, name), "source": "user"}
            elif name in model_defaults:
                resolved[name] = {"value": model_defaults[name], "source": "model_specific_defaults"}
            else:
                resolved[name] = {"value": field.default, "source": "default"}
    warnings: list[str] = []
    problems: list[Problem] = []

    def downgrade(name: str, value: Any, why: str) -> None:
        if spec.settings.strict:
            problems.append(Problem(f"{name} (from {resolved[name]['source']})", f"{why}; strict mode refuses it"))
            return
        warnings.append(f"{name}={resolved[name]['value']!r} ({resolved[name]['source']}) -> {value!r}: {why}")
        resolved[name] = {"value": value, "source": f"downgraded: {why}"}

    if resolved["load_in_4bit"]["value"]:  # never downgraded: 4-bit weights change what is trained
        problems += qlora_problems(has_cuda, resolved["load_in_4bit"]["source"])
    if not has_cuda:
        if resolved["apply_deepspeed"]["value"]:
            downgrade("apply_deepspeed", False, "DeepSpeed needs a CUDA GPU and none was found")
        if resolved["precision"]["value"] == "16" and not cpu_bf16:
            downgrade("precision", "32", "16-bit training needs a CUDA GPU or a CPU with native bf16 here")
    if resolved["num_nodes_finetune"]["value"] > 1:
        downgrade("num_nodes_finetune", 1, "this machine is one node; several nodes need a cluster")
    wanted = resolved["number_of_gpu_to_use_finetuning"]["value"]
    if isinstance(wanted, int) and wanted > max(1, devices):
        unit = "GPU" if has_cuda else "CPU core (one training process per core)"
        downgrade("number_of_gpu_to_use_finetuning", max(1, devices), f"{devices} {unit}s here")
    flat = {k: v["value"] for k, v in resolved.items()}
    sections: dict[str, Any] = {}
    for section, model in PARAM_MODELS.items():
        try:
            sections[section] = model.model_validate({k: flat[k] for k in model.model_fields})
        except ValidationError as exc:
            for err in exc.errors():
                loc = ".".join(str(p) for p in err["loc"])
                problems.append(Problem(f"{loc} (from {resolved[loc]['source']})", err["msg"]))
    if problems:  # with what the combination rules find, so that every problem is listed at once
        raise ConfigError("resolved job config", problems + combination_problems(flat))
    sources = {name: entry["source"] for name, entry in resolved.items()}
    precision, why = _mixed_precision(flat["precision"], has_cuda=has_cuda, bf16_ok=cuda_bf16 if has_cuda else cpu_bf16)
    # fp32 is what precision "32" says wherever it came from; a 16-bit choice depends on this machine, and says so.
    sources["mixed_precision"] = sources["precision"] if precision == "fp32" else f"derived: {why}"
    sources["lora_target_modules"] = (
        (lora_targets_source or "catalog: the entry's lora_target_modules") if lora_targets else "default"
    )
    config = ResolvedConfig(  # its validator checks the combination
        training=sections["training"],
        optimization=sections["optimization"],
        mixed_precision=precision,
        lora_target_modules=(lora_targets if isinstance(lora_targets, str) else list(lora_targets))
        if lora_targets
        else DEFAULT_LORA_TARGETS,
        sources=sources,
    )
    return config, warnings


def qlora_problems(has_cuda: bool, source: str) -> list[Problem]:
    """Why ``load_in_4bit`` cannot run here: bitsandbytes' 4-bit kernels need a CUDA GPU (and the package)."""
    import importlib.util

    where = f"optimization.load_in_4bit (from {source})"
    if not has_cuda:
        why = "QLoRA's 4-bit weights (bitsandbytes NF4) need a CUDA GPU and none was found"
        return [Problem(where, f"{why}; set load_in_4bit: false (LoRA over full weights) or run on a GPU")]
    if importlib.util.find_spec("bitsandbytes") is None:
        return [Problem(where, "needs the bitsandbytes package: pip install bitsandbytes", "missing_dependency")]
    return []


def combination_problems(flat: dict[str, Any]) -> list[Problem]:
    """Azure's cross-field errors and chattune's own, on resolved values by name."""
    problems = cross_field_problems(flat, flat)
    ds_file = flat.get("deepspeed_config")
    if ds_file and not Path(ds_file).is_file():
        problems.append(Problem("optimization.deepspeed_config", f"file {ds_file} not found", "invalid_value"))
    if flat.get("apply_deepspeed") and flat.get("deepspeed_stage") == 3 and flat.get("apply_lora"):
        problems.append(Problem("deepspeed_stage", "DeepSpeed stage 3 with LoRA is not supported; use stage 2"))
    return problems


def _mixed_precision(precision: str, *, has_cuda: bool, bf16_ok: bool) -> tuple[MixedPrecision, str]:
    """What precision "16" or "32" means on this machine, and why."""
    if precision != "16":
        return "fp32", "precision 32: full precision"
    if bf16_ok:
        return "bf16", "precision 16; this device computes bf16" + ("" if has_cuda else " (CPU autocast)")
    # A CPU without native bf16 never gets here: resolve downgraded its precision to "32".
    return "fp16", "precision 16; this GPU has no bf16"


def display_name(model_name: str, resolved: ResolvedConfig, gpus_per_node: int = 1, data: str = "ultrachat") -> str:
    """The seed's pipeline display-name formula (``data``: its data set's name; a preference job's method)."""
    t, o = resolved.training, resolved.optimization
    batch = t.per_device_train_batch_size * t.gradient_accumulation_steps * gpus_per_node * o.num_nodes_finetune
    ds = f"ds{o.deepspeed_stage}" if o.apply_deepspeed else "nods"
    lora = "lora" if o.apply_lora else "nolora"
    return (
        f"{model_name}-{data}-bs{batch}-{t.lr_scheduler_type}-{ds}-{lora}"
        f"-save_limit{t.save_total_limit}-seqlen{t.max_seq_length}"
    )
