"""The preference task (``task: preference``): its preprocess, finetune and evaluate bodies, on TRL's DPO trainer.

The pipeline is the chat task's (validate, model_import, preprocess, finetune, evaluate; the same cache, checkpoints,
resume, MLflow and registry); these are the steps' bodies where the task differs:

- preprocess: the pairs (chattune.data.preferences) in TRL's conversational shape, split (validation: the last 20%
  of train without a file) and saved as datasets; TRL's trainer applies the model's chat template and truncates.
- finetune: ``DPOTrainer`` with PEFT's LoRA or on all weights. With LoRA the reference model is the base with the
  adapter switched off (no second copy in memory); a full fine-tune gets a frozen copy of the base from TRL.
- evaluate: on the held-out pairs (the test file, else the validation split), for the base and the tuned model, the
  share of pairs whose preferred answer has the higher log-likelihood (``preference_accuracy``) and the mean
  log-likelihood margin; for the tuned model also DPO's implicit reward (beta x the log-ratio to the base) accuracy
  and margin, as TRL reports them while training.
"""

from __future__ import annotations

import time
from typing import Any

from chattune.data.preferences import PreferencePair, read_pairs
from chattune.data.tokens import template_length
from chattune.errors import DataError
from chattune.inference import context_length, load_tokenizer, pick_device
from chattune.pipeline.context import StepContext
from chattune.pipeline.outputs import FinetuneOutput, PreprocessOutput, SplitStats
from chattune.pipeline.steps.preprocess import read_splits
from chattune.templates import fold_system, supports_system_role, template_hash

HELD_OUT = ("test", "validation")  # the evaluate step's pairs: the test split when the job has one


def preprocess_preferences(ctx: StepContext) -> PreprocessOutput:
    """The preference pairs of each split as datasets (prompt, chosen, rejected), with their token counts.

    A pair whose prompt alone fills the sequence length (nothing of either answer would be trained on) is left out and
    named by file and line in the job log, as a chat row that loses every answer token to truncation is; a pair with
    longer answers is truncated by the trainer (keeping the start) and counted.

    Raises:
        DataError: A split has no pair left.
    """
    from datasets import Dataset

    model_path = ctx.inputs.model_import.path
    tokenizer = load_tokenizer(model_path)
    fold = not supports_system_role(tokenizer)
    max_len = ctx.resolved.max_length(context_length(model_path, tokenizer))
    files = {"train": ctx.spec.data.train, "validation": ctx.spec.data.validation or ctx.spec.data.train}
    files["test"] = ctx.spec.data.test or ""
    splits = read_splits(ctx, read_pairs, "pairs")
    stats: dict[str, SplitStats] = {}
    for name, pairs in splits.items():
        rows = [_row(p, fold) for p in pairs]
        prompts = [template_length(tokenizer, r["prompt"], add_generation_prompt=True) for r in rows]
        too_long = [p.line for p, n in zip(pairs, prompts, strict=True) if n >= max_len]
        if too_long:
            shown = ", ".join(f"{files[name]}:{line}" for line in too_long[:20])
            ctx.progress(
                f"  warning: {name}: {len(too_long)} pair(s) whose prompt alone is {max_len} tokens or more left out "
                f"(nothing of the answers would be trained on; raise training.max_seq_length or shorten them): {shown}"
            )
        kept = [r for r, n in zip(rows, prompts, strict=True) if n < max_len]
        if not kept:
            raise DataError(
                f"{name}: no preference pair left: {len(too_long)} of {len(pairs)} have prompts of {max_len} tokens "
                "or more",
                remedy="Raise training.max_seq_length (or shorten the prompts).",
            )
        lengths = [
            max(template_length(tokenizer, r["prompt"] + r[side]) for side in ("chosen", "rejected")) for r in kept
        ]
        truncated = sum(n > max_len for n in lengths)
        path = ctx.step_dir / name
        Dataset.from_list(kept).save_to_disk(str(path))
        stats[name] = SplitStats(
            path=str(path),
            rows=len(pairs),
            kept=len(kept),
            tokens=sum(lengths),
            truncated=truncated,
            no_assistant_tokens=len(too_long),
            system_folded=sum(fold and p.prompt[0]["role"] == "system" for p in pairs),
        )
        ctx.progress(
            f"  {name}: {len(kept)}/{len(pairs)} pairs, {sum(lengths)} tokens (prompt + longer answer), {truncated} "
            f"truncated at {max_len} by the trainer, {len(too_long)} left out (prompt too long)"
        )
    return PreprocessOutput(
        max_seq_length=max_len,
        system_folded_into_user=fold,
        splits=stats,
        chat_template_sha256=template_hash(tokenizer.chat_template),
    )


def _row(pair: PreferencePair, fold: bool) -> dict[str, Any]:
    row = pair.to_row()
    if fold:
        row["prompt"] = fold_system(row["prompt"])
    return row


def train_preference(ctx: StepContext, hooks: Any) -> FinetuneOutput:
    """DPO on the preprocessed pairs (in this process, a torchrun worker or a Ray Train worker, as the chat task)."""
    import torch
    from datasets import load_from_disk
    from trl import DPOTrainer

    from chattune.pipeline import checkpoints
    from chattune.pipeline.steps.finetune import (
        adapter_config,
        final_evaluation,
        load_base,
        peak_rss_mb,
        run_trainer,
    )
    from chattune.training.builders import dpo_config
    from chattune.training.callbacks import ProgressCallback
    from chattune.training.environ import keep_process_environment

    pre = ctx.inputs.preprocess
    base_path = ctx.inputs.model_import.path
    has_cuda = pick_device() == "cuda"
    if ctx.training.num_threads:
        torch.set_num_threads(ctx.training.num_threads)
    train_ds = load_from_disk(pre.train.path)
    eval_ds = load_from_disk(pre.splits["validation"].path)
    tokenizer = load_tokenizer(base_path)
    model = load_base(ctx, base_path, has_cuda)
    args = dpo_config(
        ctx.training,
        ctx.optimization,
        beta=ctx.spec.preference.beta,
        output_dir=ctx.step_dir / checkpoints.DIR,
        max_length=pre.max_seq_length,
        has_cuda=has_cuda,
        has_eval=True,
        mixed_precision=ctx.resolved.mixed_precision,
    )
    ctx.progress(f"  DPO: beta {args.beta}, {'LoRA' if ctx.optimization.apply_lora else 'all weights'}")
    keep_process_environment()  # before accelerate builds its state (chattune.training.environ says why)
    trainer = DPOTrainer(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        processing_class=tokenizer,
        peft_config=adapter_config(ctx),
        callbacks=[ProgressCallback(ctx.progress, ctx.cancelled, ctx.metrics), *hooks.callbacks],
    )
    trainer = hooks.prepare(trainer)
    result, wall, out, trainable = run_trainer(ctx, trainer, hooks, has_cuda)
    metrics: dict[str, Any] = {
        "train_loss": float(result.training_loss),
        "train_runtime_s": round(wall, 2),
        "global_steps": int(result.global_step),
        "pairs_per_s": round(pre.train.kept * float(result.metrics.get("epoch", 1)) / wall, 2) if wall > 0 else None,
        "trainable_parameters": trainable,
    }
    final = final_evaluation(trainer)
    metrics["valid_loss"] = float(final["eval_loss"])
    for key in ("rewards/accuracies", "rewards/margins", "rewards/chosen", "rewards/rejected"):
        if f"eval_{key}" in final:
            metrics[f"valid_{key.replace('/', '_')}"] = float(final[f"eval_{key}"])
    metrics["peak_rss_mb"] = peak_rss_mb()
    return FinetuneOutput(trained_model=out, kind="lora" if ctx.optimization.apply_lora else "full", metrics=metrics)


def pair_logps(model: Any, tokenizer: Any, pairs: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """Each pair's (chosen, rejected) answer log-likelihood under ``model``.

    The sum of the answer's tokens' log-probabilities after the prompt rendered with the chat template, as DPO scores
    them.
    """
    import torch

    device = next(model.parameters()).device
    scores = []
    for pair in pairs:
        prompt_ids = tokenizer.apply_chat_template(pair["prompt"], add_generation_prompt=True, return_dict=True)[
            "input_ids"
        ]
        scored = []
        for side in ("chosen", "rejected"):
            ids = tokenizer.apply_chat_template(pair["prompt"] + pair[side], return_dict=True)["input_ids"]
            start = _common_prefix(ids, prompt_ids)  # the prompt's tokens, less any the answer's rendering changed
            tensor = torch.tensor([ids], device=device)
            with torch.no_grad():
                logps = model(tensor).logits[0, :-1].float().log_softmax(-1)
            token_logps = logps.gather(-1, tensor[0, 1:, None])[:, 0]
            scored.append(float(token_logps[start - 1 :].sum()))
        scores.append((scored[0], scored[1]))
    return scores


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return max(1, n)


def evaluate_preferences(ctx: StepContext, as_model: Any) -> tuple[dict[str, dict[str, float]], str]:
    """Preference accuracy and margins of the base and the tuned model on the held-out pairs.

    Returns:
        The metrics by model (``base``, ``tuned``) and a note saying on which pairs they were computed.
    """
    from datasets import load_from_disk

    split = next(name for name in HELD_OUT if name in ctx.inputs.preprocess.splits)
    pairs = list(load_from_disk(ctx.inputs.preprocess.splits[split].path))[: ctx.spec.evaluation.max_rows]
    tokenizer = load_tokenizer(ctx.inputs.model_import.path)
    logps: dict[str, list[tuple[float, float]]] = {}
    metrics: dict[str, dict[str, float]] = {}
    for which in ("base", "tuned"):
        started = time.perf_counter()
        with as_model(which) as model:
            logps[which] = pair_logps(model, tokenizer, pairs)
        margins = [c - r for c, r in logps[which]]
        metrics[which] = {
            "preference_accuracy": sum(m > 0 for m in margins) / len(margins),
            "logp_margin": sum(margins) / len(margins),
        }
        ctx.progress(
            f"  {which}: preference accuracy {metrics[which]['preference_accuracy']:.3f}, log-likelihood margin "
            f"{metrics[which]['logp_margin']:.3f} on {len(pairs)} {split} pairs ({time.perf_counter() - started:.1f}s)"
        )
    beta = ctx.spec.preference.beta
    rewards = [beta * ((tc - bc) - (tr - br)) for (tc, tr), (bc, br) in zip(logps["tuned"], logps["base"], strict=True)]
    metrics["tuned"]["reward_accuracy"] = sum(r > 0 for r in rewards) / len(rewards)
    metrics["tuned"]["reward_margin"] = sum(rewards) / len(rewards)
    note = f"preference metrics on {len(pairs)} held-out pairs ({split} split); rewards: DPO's, beta {beta}, vs base"
    return metrics, note
