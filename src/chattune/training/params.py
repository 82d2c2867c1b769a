"""Training and optimization parameters with Azure's names and defaults (REFERENCE.md section 3)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Strict(BaseModel):
    """Base of the job parameter models: unknown keys are refused, assignments validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class TrainingParams(Strict):
    """Azure's training parameters (REFERENCE.md section 3)."""

    num_train_epochs: float = Field(1, gt=0)
    max_steps: int = -1
    per_device_train_batch_size: int = Field(1, gt=0)
    per_device_eval_batch_size: int = Field(1, gt=0)
    gradient_accumulation_steps: int = Field(1, gt=0)
    learning_rate: float = 2e-5
    lr_scheduler_type: Literal[
        "linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup"
    ] = "linear"
    warmup_steps: int = Field(0, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    optim: Literal["adamw_torch", "adafactor"] = "adamw_torch"
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0
    seed: int = 42
    # -1: the model's maximum context length.
    max_seq_length: int = -1
    evaluation_strategy: Literal["epoch", "steps", "no"] = "epoch"
    eval_steps: int = Field(500, gt=0)
    logging_steps: int = Field(10, gt=0)
    # Checkpoints (optimizer, scheduler and RNG state included) make a killed job resumable.
    save_strategy: Literal["epoch", "steps", "no"] = "epoch"
    save_steps: int = Field(500, gt=0)
    save_total_limit: int = -1
    metric_for_best_model: str = "loss"
    apply_early_stopping: bool = False
    early_stopping_patience: int = 1
    early_stopping_threshold: float = 0.0
    resume_from_checkpoint: bool = False
    auto_find_batch_size: bool = False
    # chattune's own (not Azure's): pack several conversations into each training row, each one attending only to
    # itself (TRL's best-fit-decreasing packing; position ids restart per conversation). null: on where a varlen
    # (flash) attention kernel makes it pay; true: also on the SDPA/eager paths (correct, slower for long rows).
    packing: bool | None = None
    # chattune's own speed settings (docs/benchmarks.md measures each). Each batch (the same rows as padded batching)
    # flattened into one sequence without padding, conversations kept apart by their position ids (TRL's
    # padding-free collator). null: on where the model masks conversations from position ids.
    padding_free: bool | None = None
    # Batches of similar lengths (transformers' LengthGroupedSampler: shuffled mega-batches, each sorted by length).
    # Less padding, but it changes which rows share a batch, so short rows weigh more in the per-batch mean loss.
    group_by_length: bool = False
    # Attention within each conversation of a padding-free batch, one SDPA call per conversation
    # (chattune.training.attention), where the kernel would otherwise compute the whole block-diagonal mask (SDPA
    # without a varlen kernel: CPUs). null: on wherever padding-free batches run on SDPA.
    per_conversation_attention: bool | None = None
    # Project through the LM head only the positions that carry a loss (TRL's chunked log-probabilities), where TRL
    # itself would project every position (devices without Triton). Same loss and gradients, less work.
    compact_lm_head: bool = True
    # Keep the frozen base model's linear weights in bf16 when LoRA trains under bf16 autocast on a CPU
    # (chattune.training.frozen). Autocast caches its bf16 copy only of weights that train, so it would convert every
    # frozen fp32 weight again at each call, forward and backward; converted once, the matmuls see the same numbers.
    bf16_frozen_weights: bool = True
    # Threads for the CPU kernels; null: PyTorch's default (the physical cores; 1 per process under torchrun).
    num_threads: int | None = Field(None, gt=0)
    # Recompute activations in the backward pass instead of keeping them (TRL's default: on), for every n-th decoder
    # layer (transformers' `every_n_layers`): 1 all of them (TRL's default), 2 every other one. Less recomputation
    # costs memory; every 2nd layer measured 1.2-1.3x faster than every layer and still well under plain TRL's peak
    # memory (docs/benchmarks.md), so it is chattune's default.
    gradient_checkpointing: bool = True
    gradient_checkpointing_every_n_layers: int = Field(2, ge=1)
    # torch.compile the model (inductor); pays only for long runs of few distinct shapes.
    torch_compile: bool = False


class OptimizationParams(Strict):
    """Azure's optimization parameters."""

    apply_lora: bool = False
    # Higher rank: more capacity, more memory. alpha/r scales the update.
    lora_r: int = Field(8, gt=0)
    lora_alpha: int = Field(128, gt=0)
    lora_dropout: float = Field(0.0, ge=0, lt=1)
    merge_lora_weights: bool = True
    # QLoRA (Dettmers et al.): the frozen base weights loaded in 4-bit NF4 with double quantization (bitsandbytes),
    # computed in bf16; the LoRA adapters train in bf16 (TRL casts them for a 4-bit model). Needs apply_lora and CUDA.
    load_in_4bit: bool = False
    apply_deepspeed: bool = False
    deepspeed_stage: Literal[2, 3] = 2
    # Your own DeepSpeed JSON instead of the generated ZeRO-2/ZeRO-3 config.
    deepspeed_config: str | None = None
    # "16" means bf16 where the device supports it, else fp16.
    precision: Literal["32", "16"] = "32"
    number_of_gpu_to_use_finetuning: int = Field(1, gt=0)
    num_nodes_finetune: int = Field(1, gt=0)
