"""Builders from the resolved job config to library objects: PEFT LoRA config, DeepSpeed config, TRL SFTConfig."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from chattune.training.params import OptimizationParams, TrainingParams


def lora_config(opt: OptimizationParams, target_modules: str | list[str] = "all-linear") -> Any:
    """The PEFT LoRA configuration of a job's optimization parameters."""
    from peft import LoraConfig

    # Default all linear layers: the QLoRA paper's finding that adapting every projection matches full fine-tuning
    # better than attention-only adapters, at a small memory cost. A catalog entry may name its own modules.
    return LoraConfig(
        r=opt.lora_r,
        lora_alpha=opt.lora_alpha,
        lora_dropout=opt.lora_dropout,
        target_modules=target_modules,
        task_type="CAUSAL_LM",
    )


def quantization_config(opt: OptimizationParams) -> Any | None:
    """QLoRA's load-time quantization of the frozen base (``load_in_4bit``), None without it.

    NF4 with double quantization and bf16 compute, the QLoRA paper's recipe (Dettmers et al., 2023), as transformers'
    ``BitsAndBytesConfig``; the LoRA adapters PEFT adds over it train in bf16 (TRL casts them for a 4-bit model).
    """
    if not opt.load_in_4bit:
        return None
    import torch
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )


def deepspeed_config(opt: OptimizationParams) -> dict[str, Any]:
    """Azure's stage-2 config: ZeRO-2 with the optimizer offloaded to CPU, batch sizes left to the trainer."""
    zero: dict[str, Any] = {"stage": opt.deepspeed_stage, "overlap_comm": True, "contiguous_gradients": True}
    if opt.deepspeed_stage == 2:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    return {
        "zero_optimization": zero,
        "bf16": {"enabled": "auto"},
        "fp16": {"enabled": "auto"},
        "train_batch_size": "auto",
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
    }


def trainer_args(
    train: TrainingParams,
    opt: OptimizationParams,
    *,
    output_dir: Path,
    has_cuda: bool,
    has_eval: bool,
    mixed_precision: str = "fp32",
) -> dict[str, Any]:
    """The arguments TRL's SFTConfig and DPOConfig share, from a job's training parameters.

    Evaluation, checkpointing and early stopping are set to agree: early stopping saves a checkpoint at every
    evaluation, so that the best one can be restored.
    """
    eval_strategy = train.evaluation_strategy if has_eval else "no"
    early = train.apply_early_stopping and eval_strategy != "no"
    # Early stopping restores the best checkpoint, so it needs one saved at every evaluation.
    save_strategy = eval_strategy if early else train.save_strategy
    save_steps = train.eval_steps if early else train.save_steps
    # Whenever evaluations and checkpoints line up, the best checkpoint by metric_for_best_model is the output.
    best = (
        eval_strategy != "no"
        and save_strategy == eval_strategy
        and (eval_strategy != "steps" or save_steps % train.eval_steps == 0)
    )
    return dict(
        output_dir=str(output_dir),
        num_train_epochs=train.num_train_epochs,
        max_steps=train.max_steps,
        per_device_train_batch_size=train.per_device_train_batch_size,
        per_device_eval_batch_size=train.per_device_eval_batch_size,
        gradient_accumulation_steps=train.gradient_accumulation_steps,
        auto_find_batch_size=train.auto_find_batch_size,
        learning_rate=train.learning_rate,
        lr_scheduler_type=train.lr_scheduler_type,
        warmup_steps=train.warmup_steps,
        weight_decay=train.weight_decay,
        optim=train.optim,
        adam_beta1=train.adam_beta1,
        adam_beta2=train.adam_beta2,
        adam_epsilon=train.adam_epsilon,
        max_grad_norm=train.max_grad_norm,
        seed=train.seed,
        data_seed=train.seed,
        eval_strategy=eval_strategy,
        eval_steps=train.eval_steps,
        logging_steps=train.logging_steps,
        save_strategy=save_strategy,
        save_steps=save_steps,
        save_total_limit=None if train.save_total_limit < 0 else train.save_total_limit,
        load_best_model_at_end=best,
        metric_for_best_model=f"eval_{train.metric_for_best_model}" if best else None,
        greater_is_better=not train.metric_for_best_model.endswith("loss") if best else None,
        train_sampling_strategy="group_by_length" if train.group_by_length else "random",
        torch_compile=train.torch_compile,
        gradient_checkpointing=train.gradient_checkpointing,
        # transformers' every_n_layers; left unset (TRL's and transformers' defaults) for every layer
        gradient_checkpointing_kwargs={"every_n_layers": every_n}
        if (every_n := train.gradient_checkpointing_every_n_layers) > 1
        else None,
        # The resolved config decided it (chattune.pipeline.resolved): bf16 on a device that computes it natively
        # (a CPU only then, as autocast), fp16 on an older GPU.
        bf16=mixed_precision == "bf16",
        fp16=mixed_precision == "fp16",
        use_cpu=not has_cuda,
        # Several processes (torchrun): NCCL between GPUs, gloo between CPU processes. LoRA leaves the frozen base
        # out of the gradient graph by design, so DDP need not search for unused parameters.
        ddp_backend="gloo" if not has_cuda and int(os.environ.get("WORLD_SIZE", "1")) > 1 else None,
        ddp_find_unused_parameters=False,
        deepspeed=(opt.deepspeed_config or deepspeed_config(opt)) if opt.apply_deepspeed and has_cuda else None,
        report_to="none",
        dataloader_num_workers=0,
        disable_tqdm=True,
        save_only_model=False,
    )


def sft_config(
    train: TrainingParams,
    opt: OptimizationParams,
    *,
    output_dir: Path,
    max_length: int,
    has_cuda: bool,
    has_eval: bool,
    mixed_precision: str = "fp32",
    padding_free: bool = False,
) -> Any:
    """The TRL SFTConfig of a job's training parameters."""
    from trl import SFTConfig

    return SFTConfig(
        **trainer_args(
            train, opt, output_dir=output_dir, has_cuda=has_cuda, has_eval=has_eval, mixed_precision=mixed_precision
        ),
        padding_free=padding_free,
        # Preprocess truncated every conversation (TRL enforces max_length only when it tokenizes); packing, when
        # on, is done before the trainer (chattune.training.packing).
        max_length=None if padding_free else max_length,
    )


def dpo_config(
    train: TrainingParams,
    opt: OptimizationParams,
    *,
    beta: float,
    output_dir: Path,
    max_length: int,
    has_cuda: bool,
    has_eval: bool,
    mixed_precision: str = "fp32",
) -> Any:
    """The TRL DPOConfig of a preference job.

    The same training arguments, DPO's beta, and TRL's truncation of each prompt + answer at ``max_length`` (the
    trainer tokenizes the rows, with the model's chat template).
    """
    from trl import DPOConfig

    shared = trainer_args(
        train, opt, output_dir=output_dir, has_cuda=has_cuda, has_eval=has_eval, mixed_precision=mixed_precision
    )
    # TRL's DPO trainer turns checkpointing off and on again around its reference pass, handing these kwargs to
    # torch.utils.checkpoint, which has no every_n_layers: a preference job checkpoints every layer.
    shared["gradient_checkpointing_kwargs"] = None
    return DPOConfig(
        **shared,
        beta=beta,
        max_length=max_length,
    )
