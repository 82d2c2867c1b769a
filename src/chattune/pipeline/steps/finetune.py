"""finetune: TRL SFTTrainer (+ PEFT LoRA) on the preprocessed data; loss on assistant tokens only.

One process trains in the job's runner. Several (``number_of_gpu_to_use_finetuning`` x ``num_nodes_finetune``) are
launched with torchrun (chattune.pipeline.launch); on a Ray compute target, ``resources.instance_count`` x
``processes_per_instance`` run as Ray Train workers (chattune.pipeline.ray_launch). Each worker rebuilds the step
context from the job record and calls ``train``, the same function (Ray's adapters come in as ``TrainerHooks``);
rank 0 reports progress and writes the result.
"""

from __future__ import annotations

import math
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chattune.entities import LOCAL_COMPUTE, Task
from chattune.errors import JobCancelledError, UserError
from chattune.inference import pick_device
from chattune.pipeline import checkpoints
from chattune.pipeline.context import KeyInputs, StepContext
from chattune.pipeline.outputs import FinetuneOutput
from chattune.training.attention import use_per_conversation_attention
from chattune.training.builders import lora_config, quantization_config, sft_config
from chattune.training.callbacks import ProgressCallback
from chattune.training.environ import keep_process_environment
from chattune.training.frozen import linear_weights_to_bf16
from chattune.training.lm_head import compact_lm_head, needs_compact_head, unwrap_peft
from chattune.training.packing import PackedRowsCollator, pack, packing_support


def _plot_losses(history: list[dict[str, Any]], path: Path) -> None:
    """Training and validation loss by step, as a PNG (an MLflow artifact of the finetune run)."""
    import matplotlib

    matplotlib.use("Agg")  # no display: render to a file
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label in (("loss", "train"), ("eval_loss", "validation")):
        points = [(h["step"], h[key]) for h in history if key in h]
        if points:
            ax.plot(*zip(*points, strict=True), marker="o" if label == "validation" else None, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _packing(ctx: StepContext, model: Any) -> bool:
    """The job's `packing` (null: on where it keeps conversations apart and is the faster choice), logged."""
    supported, fast, why = packing_support(model)
    wanted = ctx.training.packing
    if wanted and not supported:
        raise UserError(
            f"training.packing: {why}",
            remedy="Set training.packing to false (or leave it unset) for this model.",
        )
    on = fast if wanted is None else wanted
    how = "job config" if wanted is not None else "default for this model"
    ctx.progress(f"  packing: {'on' if on else 'off'} ({how}; {why})")
    return on


def _padding_free(ctx: StepContext, model: Any, packing: bool) -> bool:
    """The job's `padding_free` (null: on where the model keeps flattened conversations apart), logged."""
    if packing:
        return False  # packed rows are already free of padding (their own collator)
    supported, _, why = packing_support(model)
    wanted = ctx.training.padding_free
    if wanted and not supported:
        raise UserError(
            f"training.padding_free: {why}",
            remedy="Set training.padding_free to false (or leave it unset) for this model.",
        )
    on = supported if wanted is None else wanted
    how = "job config" if wanted is not None else "default for this model"
    ctx.progress(f"  padding-free batches: {'on' if on else 'off'} ({how})")
    return on


def _attention(ctx: StepContext, model: Any, padding_free: bool) -> None:
    """`per_conversation_attention` (null: on with padding-free batches on SDPA), logged."""
    wanted = ctx.training.per_conversation_attention
    if wanted is False:
        return
    if not padding_free:
        if wanted:
            ctx.progress("  per-conversation attention: not applied (it needs padding-free batches, which are off)")
        return
    if use_per_conversation_attention(model):
        ctx.progress("  attention: per conversation (SDPA, causal, one call per conversation of a batch)")
    elif wanted:
        ctx.progress(
            f"  per-conversation attention: not applied ({model.config._attn_implementation} attention is not SDPA)"
        )


@dataclass
class TrainerHooks:
    """How a launcher adapts the one training code path (Ray Train: its callback, its wrapper, its checkpoint).

    Attributes:
        callbacks: Trainer callbacks added after chattune's own.
        prepare: Applied to the built trainer before training (Ray's ``prepare_trainer``).
        resume_from: Where to resume from; None: the step's own last checkpoint when the job is resumed.
    """

    callbacks: list[Any] = field(default_factory=list)
    prepare: Callable[[Any], Any] = lambda trainer: trainer
    resume_from: Callable[[], Path | None] | None = None


class Finetune:
    """The ``finetune`` step."""

    name = "finetune"
    needs: tuple[str, ...] = ("preprocess",)

    def cache_key(self, given: KeyInputs) -> dict[str, Any] | None:
        """Every resolved value (the data is in the preprocess key); on a Ray target also its worker count and device.

        The number of training processes decides the global batch, so a Ray run never reuses a local run with
        other processes (nor the other way round). Which Ray cluster ran it does not change the result.
        """
        key: dict[str, Any] = {"config": given.resolved.to_record()}
        if given.spec.task == Task.PREFERENCE:
            key["preference"] = given.spec.preference.model_dump()
        if given.spec.compute != LOCAL_COMPUTE:
            key["ray"] = {"workers": given.spec.resources.workers, "use_gpu": given.spec.resources.use_gpu}
        return key

    def run(self, ctx: StepContext) -> FinetuneOutput:
        """Train on the job's compute: Ray Train workers on a Ray target; locally in this process or under torchrun."""
        if ctx.spec.compute != LOCAL_COMPUTE:
            from chattune.pipeline.ray_launch import launch as launch_on_ray

            return launch_on_ray(ctx)
        if ctx.resolved.world_size > 1:
            from chattune.pipeline.launch import launch

            return launch(ctx, nproc_per_node=ctx.optimization.number_of_gpu_to_use_finetuning)
        return train(ctx)


STEP = Finetune()


def train(ctx: StepContext, hooks: TrainerHooks | None = None) -> FinetuneOutput:
    """Fine-tune the model on the preprocessed data (in this process, as a torchrun worker or as a Ray Train worker).

    Resumes from the last checkpoint when the job is resumed, and stops at a cancel. ``hooks`` adapt the trainer
    to a launcher (Ray Train) without a second code path.

    Raises:
        JobCancelledError: The job was cancelled during training.
    """
    import torch
    from datasets import load_from_disk
    from transformers import EarlyStoppingCallback
    from trl import SFTTrainer

    from chattune.inference import load_tokenizer

    hooks = hooks or TrainerHooks()
    if ctx.spec.task == Task.PREFERENCE:
        from chattune.pipeline.preference import train_preference

        return train_preference(ctx, hooks)
    pre = ctx.inputs.preprocess
    base_path = ctx.inputs.model_import.path
    has_cuda = pick_device() == "cuda"
    if ctx.training.num_threads:
        torch.set_num_threads(ctx.training.num_threads)
    train_ds = load_from_disk(pre.train.path)
    eval_ds = load_from_disk(pre.splits["validation"].path) if "validation" in pre.splits else None
    tokenizer = load_tokenizer(base_path)
    model = load_base(ctx, base_path, has_cuda)
    packing = _packing(ctx, model)

    args = sft_config(
        ctx.training,
        ctx.optimization,
        output_dir=ctx.step_dir / checkpoints.DIR,
        max_length=pre.max_seq_length,
        has_cuda=has_cuda,
        mixed_precision=ctx.resolved.mixed_precision,
        has_eval=eval_ds is not None,
        padding_free=(padding_free := _padding_free(ctx, model, packing)),
    )
    _attention(ctx, model, padding_free)
    loss_tokens = sum(sum(m) for m in train_ds["assistant_masks"])
    if packing:
        train_ds = pack(train_ds, pre.max_seq_length)
        eval_ds = pack(eval_ds, pre.max_seq_length) if eval_ds is not None else None
    callbacks: list[Any] = [ProgressCallback(ctx.progress, ctx.cancelled, ctx.metrics)]
    if ctx.training.apply_early_stopping and args.load_best_model_at_end:
        callbacks.append(
            EarlyStoppingCallback(ctx.training.early_stopping_patience, ctx.training.early_stopping_threshold)
        )
    keep_process_environment()  # before accelerate builds its state (chattune.training.environ says why)
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        processing_class=tokenizer,
        data_collator=PackedRowsCollator(tokenizer.pad_token_id) if packing else None,
        peft_config=adapter_config(ctx),
        callbacks=callbacks + hooks.callbacks,
    )
    trainer = hooks.prepare(trainer)
    if ctx.training.compact_lm_head and needs_compact_head("cuda" if has_cuda else "cpu"):
        applied = compact_lm_head(unwrap_peft(trainer.model))
        ctx.progress(f"  LM head: {'loss positions only' if applied else 'every position (scaled logits)'}")
    result, wall, out, trainable = run_trainer(ctx, trainer, hooks, has_cuda)
    epochs = float(result.metrics.get("epoch", ctx.training.num_train_epochs))
    metrics: dict[str, Any] = {
        "train_loss": float(result.training_loss),
        "train_runtime_s": round(wall, 2),
        "global_steps": int(result.global_step),
        "trained_tokens": int(loss_tokens * epochs),
        "input_tokens": int(pre.train.tokens * epochs),
        "tokens_per_s": round(pre.train.tokens * epochs / wall, 1) if wall > 0 else None,
        "trainable_parameters": trainable,
    }
    if trainer.state.best_model_checkpoint:
        metrics["best_checkpoint"] = Path(trainer.state.best_model_checkpoint).name
    if eval_ds is not None:
        final_eval = final_evaluation(trainer)
        metrics["valid_loss"] = float(final_eval["eval_loss"])
        metrics["valid_perplexity"] = math.exp(min(final_eval["eval_loss"], 50))
        if "eval_mean_token_accuracy" in final_eval:
            metrics["valid_mean_token_accuracy"] = float(final_eval["eval_mean_token_accuracy"])
    metrics["peak_rss_mb"] = peak_rss_mb()
    return FinetuneOutput(trained_model=out, kind="lora" if ctx.optimization.apply_lora else "full", metrics=metrics)


def adapter_config(ctx: StepContext) -> Any | None:
    """The job's PEFT LoRA config, None for a full fine-tune."""
    return lora_config(ctx.optimization, ctx.resolved.lora_target_modules) if ctx.optimization.apply_lora else None


def load_base(ctx: StepContext, base_path: str, has_cuda: bool) -> Any:
    """The base model to train, with ``load_in_4bit`` QLoRA's 4-bit base.

    bf16 weights on a GPU that computes bf16, else fp32 (a CPU trains under bf16 autocast, as TRL does; fp16 is always
    AMP over fp32 weights). For LoRA under bf16 autocast on a CPU, the frozen linear weights are converted to bf16
    once (``training.bf16_frozen_weights``; chattune.training.frozen says why).
    """
    import torch
    from transformers import AutoModelForCausalLM

    if (quantized := quantization_config(ctx.optimization)) is not None:
        # QLoRA: the base in 4-bit on this process's GPU (resolve refused load_in_4bit without one); TRL readies a
        # 4-bit model when it adds the adapters (input gradients, bf16 adapters as the QLoRA paper has them).
        return AutoModelForCausalLM.from_pretrained(
            base_path, dtype=torch.bfloat16, quantization_config=quantized, device_map={"": torch.cuda.current_device()}
        )
    bf16_weights = has_cuda and ctx.resolved.mixed_precision == "bf16"
    model = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.bfloat16 if bf16_weights else torch.float32)
    if (
        not has_cuda
        and ctx.optimization.apply_lora
        and ctx.resolved.mixed_precision == "bf16"
        and ctx.training.bf16_frozen_weights
    ):
        converted = linear_weights_to_bf16(model)
        ctx.progress(f"  frozen weights: {converted / 1e6:.1f}M linear weights kept in bf16 (autocast computes in it)")
    return model


def peak_rss_mb() -> float:
    """This process's peak resident memory so far (MB): training's, since the steps after it have not run yet."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return round(peak / (2**20 if sys.platform == "darwin" else 2**10), 1)


def final_evaluation(trainer: Any) -> dict[str, float]:
    """The evaluation at the last step: the one the trainer logged there, or a new one if it logged none."""
    evals = [e for e in trainer.state.log_history if "eval_loss" in e]
    return dict(evals[-1]) if evals and evals[-1].get("step") == trainer.state.global_step else trainer.evaluate()


def run_trainer(ctx: StepContext, trainer: Any, hooks: TrainerHooks, has_cuda: bool) -> tuple[Any, float, Path, int]:
    """Train (resuming from the last checkpoint when the job is resumed), stop at a cancel, save the trained model.

    Returns:
        The trainer's result, the training's wall time (s), the trained model's folder and its trainable parameters.

    Raises:
        JobCancelledError: The job was cancelled during training.
    """
    trained: Any = trainer.model
    trainable = sum(p.numel() for p in trained.parameters() if p.requires_grad)
    total = sum(p.numel() for p in trained.parameters())
    ctx.progress(f"  training {trainable:,} of {total:,} parameters on {'cuda' if has_cuda else 'cpu'}")
    if hooks.resume_from is not None:
        checkpoint = hooks.resume_from()
    else:
        checkpoint = checkpoints.last(ctx.step_dir / checkpoints.DIR) if ctx.resume else None
    if checkpoint:
        ckpt_name = f"checkpoint-{checkpoints.global_step(checkpoint)}"
        ctx.progress(f"  resuming from {ckpt_name} (optimizer, scheduler and RNG state restored)")
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    wall = time.perf_counter() - started
    if ctx.cancelled():
        raise JobCancelledError(
            f"cancelled at step {result.global_step}; `chattune jobs resume {ctx.job.id}` continues from the last "
            "checkpoint"
        )

    out = ctx.outputs_dir / "trained_model"
    # The weights (or adapter) and the tokenizer. Every rank takes part (ZeRO-3 gathers partitioned weights); only
    # the main process writes. A bare save_pretrained on rank 0 would write an empty adapter under ZeRO-3, a failure
    # the peers report.
    trainer.save_model(str(out))
    if trainer.is_world_process_zero():
        (out / "training_args.bin").unlink(missing_ok=True)  # a pickle; the resolved config is in MLflow
        _plot_losses(trainer.state.log_history, ctx.step_dir / "loss_curve.png")
    return result, wall, out, trainable
