"""chattune.pipeline.config: spec parsing (every problem, with line and closest key), resolution and its sources."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from chattune.catalog import get_entry
from chattune.errors import ConfigError, UserError
from chattune.pipeline.config import OptimizationParams, TrainingParams, load_spec, parse_spec
from chattune.pipeline.resolved import DERIVED, ResolvedConfig, display_name
from chattune.pipeline.resolved import resolve as resolve_config

PHI3 = "phi-3-mini-4k-instruct"


def write(tmp_path: Path, text: str, name: str = "job.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def spec_of(**sections: Any) -> Any:
    return parse_spec({"data": {"train": "train.jsonl"}, **sections})


def resolve(*args: Any, **kwargs: Any) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """The resolved config as the job record stores it (value and source per name)."""
    config, warnings = resolve_config(*args, **kwargs)
    assert ResolvedConfig.from_record(config.to_record()) == config  # what the runner and workers read back
    return config.to_record(), warnings


def phi3_defaults() -> dict[str, Any]:
    return get_entry(PHI3).model_specific_defaults


# -- parse_spec / load_spec -------------------------------------------------------------------------------------


def test_minimal_spec_and_relative_paths(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        data:
          train: data/train.jsonl
          test: /abs/test.jsonl
        """,
    )
    spec = load_spec(path)
    assert spec.model == "smollm2-135m-instruct"
    assert spec.experiment_name == "chat_completion_demo"
    assert spec.data.train == str((tmp_path / "data" / "train.jsonl").resolve())
    assert spec.data.test == "/abs/test.jsonl"
    assert spec.data.validation is None
    assert spec.training.model_fields_set == set()
    assert spec.settings.strict is False


def test_unknown_key_names_closest_key_and_yaml_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        model: smollm2-135m-instruct
        data:
          train: t.jsonl
        training:
          num_train_epochs: 2
          learning_rat: 0.001
        """,
    )
    with pytest.raises(ConfigError) as exc:
        load_spec(path)
    err = exc.value
    assert len(err.problems) == 1
    problem = err.problems[0]
    assert problem.code == "unknown_key"
    assert problem.where == f"{path}:6: training.learning_rat"
    assert "job.yaml:6" in str(problem)
    assert "did you mean `learning_rate`?" in problem.message
    assert err.code == "invalid_config"
    assert err.exit_code == 2
    assert err.details["problems"][0]["code"] == "unknown_key"


def test_data_format_is_a_named_chat_format(tmp_path: Path) -> None:
    from chattune.data.chat_formats import ChatFormat

    assert parse_spec({"data": {"train": "t.json", "format": "alpaca"}}).data.format == ChatFormat.ALPACA
    assert parse_spec({"data": {"train": "t.json"}}).data.format is None  # detected per file
    path = write(tmp_path, "data:\n  train: t.json\n  format: alpacca\n")
    with pytest.raises(ConfigError) as exc:
        load_spec(path)
    (problem,) = exc.value.problems
    assert problem.where == f"{path}:3: data.format"
    assert "'openai', 'ultrachat', 'sharegpt', 'alpaca', 'dolly' or 'prompt_completion'" in problem.message


def test_unknown_key_without_close_match_lists_valid_keys() -> None:
    with pytest.raises(ConfigError) as exc:
        parse_spec({"data": {"train": "t.jsonl"}, "settings": {"zzzz": 1}})
    message = exc.value.problems[0].message
    assert "valid keys: continue_on_step_failure, force_rerun, max_failures, strict" in message


def test_all_problems_reported_at_once(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        modle: x
        data:
          validation: v.jsonl
        training:
          learning_rate: 0
          lr_scheduler_type: exponential
          apply_early_stopping: true
          evaluation_strategy: "no"
          auto_find_batch_size: true
        optimization:
          apply_deepspeed: true
          lora_rank: 8
        evaluation:
          max_rows: 0
        """,
    )
    with pytest.raises(ConfigError) as exc:
        load_spec(path)
    problems = exc.value.problems
    by_where = {p.where.split(": ", 1)[1] if ": " in p.where else p.where: p for p in problems}
    assert len(problems) == 8, [str(p) for p in problems]
    assert by_where["modle"].message.endswith("did you mean `model`?")
    assert by_where["modle"].where == f"{path}:1: modle"
    assert by_where["optimization.lora_rank"].code == "unknown_key"
    assert "lora_r" in by_where["optimization.lora_rank"].message
    assert by_where["training.lr_scheduler_type"].code == "invalid_value"
    assert by_where["evaluation.max_rows"].code == "invalid_value"
    assert by_where["data.train"].code == "missing_key"
    assert by_where["training.learning_rate"].message.startswith("must be > 0")
    assert by_where["training.learning_rate"].where == f"{path}:5: training.learning_rate"
    assert by_where["training.apply_early_stopping"].code == "invalid_combination"
    assert "evaluation_strategy" in by_where["training.apply_early_stopping"].message
    assert by_where["training.auto_find_batch_size"].code == "invalid_combination"
    assert "8 problem(s)" in exc.value.message


@pytest.mark.parametrize("lr", [0, -0.1, 0.0])
def test_learning_rate_must_be_positive(lr: float) -> None:
    with pytest.raises(ConfigError) as exc:
        spec_of(training={"learning_rate": lr})
    assert [p.code for p in exc.value.problems] == ["invalid_value"]
    assert "learning_rate" in exc.value.problems[0].where


def test_learning_rate_in_exponent_notation_is_checked(tmp_path: Path) -> None:
    path = write(tmp_path, "data:\n  train: t.jsonl\ntraining:\n  learning_rate: -1e-5\n")
    with pytest.raises(ConfigError):
        load_spec(path)


def test_quoted_false_early_stopping_is_false() -> None:
    spec = spec_of(training={"apply_early_stopping": "false", "evaluation_strategy": "no"})
    assert spec.training.apply_early_stopping is False


def test_early_stopping_with_evaluation_ok_when_strategy_given() -> None:
    spec = spec_of(training={"apply_early_stopping": True, "evaluation_strategy": "steps"})
    assert spec.training.apply_early_stopping is True
    assert spec.training.model_fields_set == {"apply_early_stopping", "evaluation_strategy"}


def test_malformed_yaml_is_a_config_error(tmp_path: Path) -> None:
    path = write(tmp_path, "data:\n  train: [unclosed\nmodel: x\n")
    with pytest.raises(ConfigError) as exc:
        load_spec(path)
    (problem,) = exc.value.problems
    assert problem.code == "invalid_yaml"
    assert problem.where.startswith(f"{path}:")
    assert "malformed YAML" in problem.message


def test_missing_file_and_non_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_spec(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="must be a YAML mapping"):
        load_spec(write(tmp_path, "- a\n- b\n"))
    with pytest.raises(ConfigError) as exc:
        parse_spec({"data": {"train": "t"}, "training": [1, 2]})
    assert exc.value.problems[0].code == "invalid_type"


def test_config_error_is_a_user_error() -> None:
    with pytest.raises(UserError):
        parse_spec({"data": {}})


# -- resolve ----------------------------------------------------------------------------------------------------


def test_resolve_precedence_user_then_model_defaults_then_builtin() -> None:
    spec = spec_of(training={"num_train_epochs": 3, "learning_rate": 1e-4}, optimization={"lora_r": 16})
    resolved, warnings = resolve(spec, phi3_defaults(), has_cuda=True)
    assert warnings == []
    assert resolved["num_train_epochs"] == {"value": 3, "source": "user"}
    assert resolved["learning_rate"] == {"value": 1e-4, "source": "user"}
    assert resolved["lora_r"] == {"value": 16, "source": "user"}
    assert resolved["lr_scheduler_type"] == {"value": "cosine", "source": "model_specific_defaults"}
    assert resolved["apply_deepspeed"] == {"value": True, "source": "model_specific_defaults"}
    assert resolved["precision"] == {"value": "16", "source": "model_specific_defaults"}
    assert resolved["save_total_limit"] == {"value": 1, "source": "model_specific_defaults"}
    assert resolved["warmup_steps"] == {"value": 0, "source": "default"}
    assert resolved["lora_alpha"] == {"value": 128, "source": "default"}
    assert set(resolved) == set(TrainingParams.model_fields) | set(OptimizationParams.model_fields) | set(DERIVED)
    config, _ = resolve_config(spec, phi3_defaults(), has_cuda=True)
    assert config.training.num_train_epochs == 3
    assert config.optimization.apply_lora is True


def test_builtin_defaults_match_reference() -> None:
    resolved, _ = resolve(spec_of(), {}, has_cuda=False)
    flat = {k: v["value"] for k, v in resolved.items()}
    assert all(v["source"] == "default" for v in resolved.values())
    assert flat["learning_rate"] == 2e-5
    assert flat["lr_scheduler_type"] == "linear"
    assert flat["max_seq_length"] == -1
    assert flat["save_total_limit"] == -1
    assert flat["eval_steps"] == 500
    assert flat["lora_r"] == 8
    assert flat["lora_alpha"] == 128
    assert flat["deepspeed_stage"] == 2
    assert flat["precision"] == "32"


def test_resolve_downgrades_without_cuda_with_warnings() -> None:
    resolved, warnings = resolve(spec_of(), phi3_defaults(), has_cuda=False)
    assert resolved["apply_deepspeed"]["value"] is False
    assert resolved["apply_deepspeed"]["source"] == "downgraded: DeepSpeed needs a CUDA GPU and none was found"
    assert resolved["precision"]["value"] == "32"
    assert resolved["precision"]["source"].startswith("downgraded: ")
    assert len(warnings) == 2
    assert warnings[0].startswith("apply_deepspeed=True (model_specific_defaults) -> False")
    assert warnings[1].startswith("precision='16' (model_specific_defaults) -> '32'")
    # What needs no GPU is kept.
    assert resolved["apply_lora"] == {"value": True, "source": "model_specific_defaults"}


def test_user_given_deepspeed_is_downgraded_too() -> None:
    spec = spec_of(optimization={"apply_deepspeed": True, "precision": "16"})
    resolved, warnings = resolve(spec, {}, has_cuda=False)
    assert resolved["apply_deepspeed"]["value"] is False
    assert "(user)" in warnings[0]


def test_strict_mode_refuses_downgrades() -> None:
    spec = parse_spec({"data": {"train": "t"}, "settings": {"strict": True}})
    with pytest.raises(ConfigError) as exc:
        resolve(spec, phi3_defaults(), has_cuda=False)
    wheres = [p.where for p in exc.value.problems]
    assert wheres == ["apply_deepspeed (from model_specific_defaults)", "precision (from model_specific_defaults)"]
    assert all("strict mode refuses it" in p.message for p in exc.value.problems)
    # On a GPU machine the same spec resolves.
    resolved, warnings = resolve(spec, phi3_defaults(), has_cuda=True)
    assert resolved["apply_deepspeed"]["value"] is True
    assert warnings == []


def test_more_processes_than_devices_are_downgraded() -> None:
    spec = spec_of(optimization={"number_of_gpu_to_use_finetuning": 8, "num_nodes_finetune": 2})
    resolved, warnings = resolve(spec, {}, has_cuda=False, devices=2)
    assert resolved["number_of_gpu_to_use_finetuning"]["value"] == 2
    assert resolved["number_of_gpu_to_use_finetuning"]["source"].startswith("downgraded: 2 CPU core")
    assert resolved["num_nodes_finetune"]["value"] == 1
    assert "one node" in resolved["num_nodes_finetune"]["source"]
    assert len(warnings) == 2
    # Two processes on a 2-core machine are honoured, as are 4 GPUs on a 4-GPU machine.
    spec = spec_of(optimization={"number_of_gpu_to_use_finetuning": 2})
    assert resolve(spec, {}, has_cuda=False, devices=2)[0]["number_of_gpu_to_use_finetuning"]["source"] == "user"
    spec = spec_of(optimization={"number_of_gpu_to_use_finetuning": 4})
    assert resolve(spec, {}, has_cuda=True, devices=4)[1] == []
    strict = parse_spec(
        {"data": {"train": "t"}, "optimization": {"number_of_gpu_to_use_finetuning": 4}, "settings": {"strict": True}}
    )
    with pytest.raises(ConfigError) as exc:
        resolve(strict, {}, has_cuda=True, devices=1)
    assert exc.value.problems[0].where == "number_of_gpu_to_use_finetuning (from user)"


def test_deepspeed_stage3_with_lora_refused() -> None:
    spec = spec_of(optimization={"apply_deepspeed": True, "deepspeed_stage": 3, "apply_lora": True})
    with pytest.raises(ConfigError) as exc:
        resolve(spec, {}, has_cuda=True)
    assert [p.where for p in exc.value.problems] == ["deepspeed_stage"]
    assert "stage 2" in exc.value.problems[0].message
    # Stage 3 without LoRA is fine.
    resolved, _ = resolve(spec_of(optimization={"apply_deepspeed": True, "deepspeed_stage": 3}), {}, has_cuda=True)
    assert resolved["deepspeed_stage"]["value"] == 3


def test_resolved_combination_checked_across_sources() -> None:
    # auto_find_batch_size from the user, apply_deepspeed from the catalog: caught at resolution.
    spec = spec_of(training={"auto_find_batch_size": True})
    with pytest.raises(ConfigError) as exc:
        resolve(spec, phi3_defaults(), has_cuda=True)
    assert [p.code for p in exc.value.problems] == ["invalid_combination"]


def test_invalid_model_default_names_its_source() -> None:
    with pytest.raises(ConfigError) as exc:
        resolve(spec_of(), {"lora_r": 0}, has_cuda=True)
    assert exc.value.problems[0].where == "lora_r (from model_specific_defaults)"


# -- display name -----------------------------------------------------------------------------------------------


def seed_display_name(model_name: str, finetune_parameters: dict[str, Any], gpus_per_node: int) -> str:
    """The seed notebook's get_pipeline_display_name, transcribed (its booleans are the strings "true"/"false")."""
    batch_size = (
        int(finetune_parameters.get("per_device_train_batch_size", 1))
        * int(finetune_parameters.get("gradient_accumulation_steps", 1))
        * int(gpus_per_node)
        * int(finetune_parameters.get("num_nodes_finetune", 1))
    )
    scheduler = finetune_parameters.get("lr_scheduler_type", "linear")
    ds_string = (
        f"ds{finetune_parameters.get('deepspeed_stage', '2')}"
        if finetune_parameters.get("apply_deepspeed", "false") == "true"
        else "nods"
    )
    lora_string = "lora" if finetune_parameters.get("apply_lora", "false") == "true" else "nolora"
    save_limit = finetune_parameters.get("save_total_limit", -1)
    seq_len = finetune_parameters.get("max_seq_length", -1)
    return (
        model_name
        + "-"
        + "ultrachat"
        + "-"
        + f"bs{batch_size}"
        + "-"
        + f"{scheduler}"
        + "-"
        + ds_string
        + "-"
        + lora_string
        + f"-save_limit{save_limit}"
        + f"-seqlen{seq_len}"
    )


def as_seed_params(resolved: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {k: (str(v["value"]).lower() if isinstance(v["value"], bool) else v["value"]) for k, v in resolved.items()}


def test_display_name_phi3_catalog_defaults() -> None:
    config, _ = resolve_config(spec_of(), phi3_defaults(), has_cuda=True)
    name = display_name(PHI3, config)
    assert name == "phi-3-mini-4k-instruct-ultrachat-bs1-cosine-ds2-lora-save_limit1-seqlen-1"
    assert name == seed_display_name(PHI3, as_seed_params(config.to_record()), 1)


@pytest.mark.parametrize("gpus", [1, 4])
def test_display_name_matches_seed_formula(gpus: int) -> None:
    spec = spec_of(
        training={"per_device_train_batch_size": 2, "gradient_accumulation_steps": 3, "max_seq_length": 512},
        optimization={"num_nodes_finetune": 2, "apply_lora": False},
    )
    config, _ = resolve_config(spec, phi3_defaults(), has_cuda=True, devices=gpus)
    # One machine is one node (num_nodes is downgraded); the formula itself is the seed's for any node count.
    config = config.model_copy(
        update={"optimization": config.optimization.model_copy(update={"num_nodes_finetune": 2})}
    )
    name = display_name("Phi-3-mini-4k-instruct", config, gpus_per_node=gpus)
    assert name == seed_display_name("Phi-3-mini-4k-instruct", as_seed_params(config.to_record()), gpus)
    assert f"-bs{2 * 3 * gpus * 2}-" in name
    assert name.endswith("-cosine-ds2-nolora-save_limit1-seqlen512")


def test_display_name_without_deepspeed_on_cpu() -> None:
    config, _ = resolve_config(spec_of(), phi3_defaults(), has_cuda=False)
    assert display_name("m", config) == "m-ultrachat-bs1-cosine-nods-lora-save_limit1-seqlen-1"


def test_example_job_in_cli_md_parses() -> None:
    text = textwrap.dedent(
        """
        model: smollm2-135m-instruct
        experiment_name: chat_completion_demo
        data:
          train: data/train_sft.jsonl
          validation: null
          test: data/test_sft.jsonl
          generation_test: data/test_gen.jsonl
        training:
          num_train_epochs: 1
          per_device_train_batch_size: 1
          learning_rate: 5.0e-6
          lr_scheduler_type: cosine
          max_seq_length: 512
        optimization:
          apply_lora: true
          lora_r: 8
          apply_deepspeed: false
          precision: "32"
        settings:
          force_rerun: false
          continue_on_step_failure: false
        """
    )
    spec = parse_spec(yaml.safe_load(text), "job.yaml", text)
    resolved, warnings = resolve(spec, {}, has_cuda=False)
    assert warnings == []
    assert resolved["learning_rate"] == {"value": 5e-6, "source": "user"}
    assert resolved["max_seq_length"]["value"] == 512


# -- the models' own validators (a spec or resolved config built in Python) ---------------------------------------


def test_a_spec_built_in_python_lists_every_problem_like_the_yaml() -> None:
    from chattune.pipeline.config import JobSpec

    with pytest.raises(ConfigError) as exc:
        JobSpec.model_validate({"data": {"train": "t"}, "optimization": {"lora_rank": 4}, "modle": "x"})
    assert {p.code for p in exc.value.problems} == {"unknown_key"}
    assert any("did you mean `lora_r`?" in p.message for p in exc.value.problems)
    with pytest.raises(ConfigError) as exc:
        JobSpec.model_validate(
            {"data": {"train": "t"}, "training": {"apply_early_stopping": True, "evaluation_strategy": "no"}}
        )
    assert [p.code for p in exc.value.problems] == ["invalid_combination"]


def test_resolved_config_checks_its_combination() -> None:
    training, optimization = (
        TrainingParams(),
        OptimizationParams(apply_deepspeed=True, deepspeed_stage=3, apply_lora=True),
    )
    with pytest.raises(ConfigError) as exc:
        ResolvedConfig(training=training, optimization=optimization, sources={})
    assert [p.where for p in exc.value.problems] == ["deepspeed_stage"]


def test_mixed_precision_and_lora_targets_are_resolved_with_their_source() -> None:
    spec = spec_of(optimization={"precision": "16"})
    config, _ = resolve_config(spec, {}, has_cuda=True, cuda_bf16=True, lora_targets=["qkv_proj"])
    record = config.to_record()
    assert record["mixed_precision"]["value"] == "bf16" and record["mixed_precision"]["source"].startswith("derived")
    assert record["lora_target_modules"] == {
        "value": ["qkv_proj"],
        "source": "catalog: the entry's lora_target_modules",
    }
    assert resolve_config(spec, {}, has_cuda=True, cuda_bf16=False)[0].mixed_precision == "fp16"
    assert resolve_config(spec, {}, has_cuda=False, cpu_bf16=True)[0].mixed_precision == "bf16"
    cpu, warnings = resolve_config(spec, {}, has_cuda=False)
    assert cpu.mixed_precision == "fp32" and cpu.sources["mixed_precision"].startswith("downgraded")
    assert warnings


def test_max_seq_length_minus_one_means_the_models_context() -> None:
    config, _ = resolve_config(spec_of(), {}, has_cuda=False)
    assert config.max_length(2048) == 2048 and config.max_length(None) == 4096
    config, _ = resolve_config(spec_of(training={"max_seq_length": 512}), {}, has_cuda=False)
    assert config.max_length(256) == 256 and config.max_length(None) == 512
