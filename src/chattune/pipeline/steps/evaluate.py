"""evaluate: test loss and perplexity, and the task metric on generation_test, for base and fine-tuned side by side.

Generation follows Azure's evaluation: the trailing assistant turn of each test conversation is removed and
regenerated (greedy), then compared with the reference by exact match and ROUGE-L (rouge-score).
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterator
from typing import Any

from chattune.inference import ChatGenerator, GenerationParams, load_model, load_tokenizer, pick_device
from chattune.pipeline.context import KeyInputs, StepContext
from chattune.pipeline.outputs import EvaluateOutput
from chattune.pipeline.steps.preprocess import read_conversations
from chattune.training.environ import keep_process_environment
from chattune.training.lm_head import compact_lm_head, needs_compact_head, unwrap_peft


def split_reference(conversation: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], str] | None:
    """Split a conversation into its prompt and its last assistant turn, the reference; None without one."""
    if len(conversation) < 2 or conversation[-1]["role"] != "assistant":
        return None
    return conversation[:-1], conversation[-1]["content"]


ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")


def text_metrics(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Azure's generation metrics plus exact match.

    ROUGE-1/2/L/Lsum F1 from rouge-score and corpus BLEU-1..4 from sacrebleu, on a 0-1 scale, plus exact match, the demo
    task's metric.
    """
    from rouge_score import rouge_scorer
    from sacrebleu.metrics import BLEU

    pairs = list(zip(predictions, references, strict=True))
    n = max(1, len(pairs))
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=False)
    scores = [scorer.score(r, p) for p, r in pairs]
    out = {"exact_match": sum(p.strip() == r.strip() for p, r in pairs) / n}
    for kind in ROUGE_TYPES:
        out[kind] = sum(s[kind].fmeasure for s in scores) / n
    for order in range(1, 5):
        bleu = BLEU(max_ngram_order=order, effective_order=True)
        out[f"bleu{order}"] = bleu.corpus_score(predictions, [references]).score / 100 if pairs else 0.0
    return out


def _write_table(step_dir: Any, metrics: dict[str, dict[str, float]]) -> None:
    """metrics.json and a Markdown table, base beside tuned (MLflow artifacts of the evaluate run)."""
    (step_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    names = sorted(set(metrics["base"]) | set(metrics["tuned"]))
    lines = ["| metric | base | fine-tuned |", "|---|---|---|"]
    lines += [
        f"| {k} | {metrics['base'].get(k, float('nan')):.4g} | {metrics['tuned'].get(k, float('nan')):.4g} |"
        for k in names
    ]
    (step_dir / "metrics.md").write_text("\n".join(lines) + "\n")


def _loss(model: Any, tokenizer: Any, dataset: Any, ctx: StepContext) -> dict[str, float]:
    from trl import SFTConfig, SFTTrainer

    args = SFTConfig(
        output_dir=str(ctx.step_dir / "tmp"),
        per_device_eval_batch_size=ctx.training.per_device_eval_batch_size,
        report_to="none",
        use_cpu=pick_device() == "cpu",
        disable_tqdm=True,
    )
    # SFTTrainer insists on a train_dataset; giving it the test set (never trained on) keeps the loss and token
    # accuracy computed exactly as during training.
    keep_process_environment()
    trainer = SFTTrainer(
        model=model, args=args, train_dataset=dataset, eval_dataset=dataset, processing_class=tokenizer
    )
    if ctx.training.compact_lm_head and needs_compact_head(pick_device()):
        compact_lm_head(unwrap_peft(trainer.model))
    result = trainer.evaluate()
    out = {"test_loss": float(result["eval_loss"]), "test_perplexity": math.exp(min(result["eval_loss"], 50))}
    if "eval_mean_token_accuracy" in result:
        out["test_mean_token_accuracy"] = float(result["eval_mean_token_accuracy"])
    return out


class Evaluate:
    """The ``evaluate`` step."""

    name = "evaluate"
    needs: tuple[str, ...] = ("finetune",)

    def cache_key(self, given: KeyInputs) -> dict[str, Any] | None:
        """The evaluation settings (the trained model is in the finetune key)."""
        return {"evaluation": given.spec.evaluation.model_dump()}

    def run(self, ctx: StepContext) -> EvaluateOutput:
        """Evaluate the base and the fine-tuned model on the test files."""
        return run(ctx)


STEP = Evaluate()


def run(ctx: StepContext) -> EvaluateOutput:
    """The evaluate step: test loss and perplexity, and generation metrics, of the base and of the tuned model.

    Writes a metrics table and, with a generation test, the predictions of both models beside the references.
    """
    from datasets import load_from_disk

    base_path = ctx.inputs.model_import.path
    tuned = ctx.inputs.finetune
    tokenizer = load_tokenizer(base_path)
    is_lora = tuned.kind == "lora"
    tuned_model = load_model(base_path, str(tuned.trained_model)) if is_lora else None
    base_model = None if is_lora else load_model(base_path)

    @contextlib.contextmanager
    def as_model(which: str) -> Iterator[Any]:
        if is_lora:
            assert tuned_model is not None
            if which == "base":
                with tuned_model.disable_adapter():
                    yield tuned_model
            else:
                yield tuned_model
        elif which == "base":
            yield base_model
        else:
            yield load_model(str(tuned.trained_model))

    test_split = ctx.inputs.preprocess.splits.get("test")
    gen_cases: list[tuple[list[dict[str, Any]], str]] = []
    if ctx.spec.data.generation_test:
        rows = read_conversations(ctx.spec.data.generation_test)[: ctx.spec.evaluation.max_rows]
        gen_cases = [case for case in (split_reference(r) for r in rows) if case is not None]

    metrics: dict[str, dict[str, float]] = {"base": {}, "tuned": {}}
    predictions: dict[str, list[str]] = {}
    for which in ("base", "tuned"):
        with as_model(which) as model:
            if test_split:
                metrics[which].update(_loss(model, tokenizer, load_from_disk(test_split.path), ctx))
            if gen_cases:
                gen = ChatGenerator(model, tokenizer)
                params = GenerationParams(max_new_tokens=ctx.spec.evaluation.max_new_tokens)
                outs: list[str] = []
                size = ctx.spec.evaluation.batch_size
                for i in range(0, len(gen_cases), size):
                    chunk = gen_cases[i : i + size]
                    outs += [g.text for g in gen.generate([c[0] for c in chunk], params)]
                    ctx.progress(f"  {which}: generated {len(outs)}/{len(gen_cases)}")
                predictions[which] = outs
                metrics[which].update(text_metrics(outs, [c[1] for c in gen_cases]))
        ctx.progress(f"  {which}: " + ", ".join(f"{k} {v:.4g}" for k, v in metrics[which].items()))

    _write_table(ctx.step_dir, metrics)
    if gen_cases:
        with (ctx.step_dir / "predictions.jsonl").open("w", encoding="utf-8") as fh:
            for i, (conv, ref) in enumerate(gen_cases):
                row = {
                    "prompt": conv,
                    "reference": ref,
                    "base": predictions["base"][i],
                    "tuned": predictions["tuned"][i],
                }
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return EvaluateOutput(metrics=metrics, generation_rows=len(gen_cases))
