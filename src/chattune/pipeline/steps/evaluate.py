"""evaluate: test loss and perplexity, and the task metric on generation_test, for base and fine-tuned side by side.

Generation follows Azure's evaluation: the trailing assistant turn of each test conversation is removed and
regenerated (greedy), then compared with the reference by exact match, ROUGE and BLEU. A row that ends on a user
turn (ultrachat_200k's test_gen) is answered too, with no reference to score against: every answer is kept in
``predictions.jsonl``, and the metrics say on how many rows they were computed.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterator
from typing import Any

from chattune.data.conversations import GenerationCase, generation_case, read_conversations
from chattune.entities import Task
from chattune.inference import ChatGenerator, GenerationParams, load_model, load_tokenizer, pick_device
from chattune.pipeline.context import KeyInputs, StepContext
from chattune.pipeline.outputs import EvaluateOutput
from chattune.training.environ import keep_process_environment
from chattune.training.lm_head import compact_lm_head, needs_compact_head, unwrap_peft

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


def _write_table(step_dir: Any, metrics: dict[str, dict[str, float]], note: str | None) -> None:
    """metrics.json and a Markdown table, base beside tuned (MLflow artifacts of the evaluate run)."""
    (step_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    names = sorted(set(metrics["base"]) | set(metrics["tuned"]))
    lines = ["| metric | base | fine-tuned |", "|---|---|---|"]
    lines += [
        f"| {k} | {metrics['base'].get(k, float('nan')):.4g} | {metrics['tuned'].get(k, float('nan')):.4g} |"
        for k in names
    ]
    if note:
        lines += ["", note]
    (step_dir / "metrics.md").write_text("\n".join(lines) + "\n")


def generation_note(cases: list[GenerationCase], rows: int) -> str:
    """What the generation metrics were computed on, in words for the job log and metrics.md.

    For example ``generation_test: generated 10/10 rows, reference metrics on 0 (10 without a reference answer: the
    row ends on a user turn)``.
    """
    scored = sum(c.reference is not None for c in cases)
    note = f"generation_test: generated {len(cases)}/{rows} rows, reference metrics on {scored}"
    if scored < len(cases):
        note += f" ({len(cases) - scored} without a reference answer: the row ends on a user turn)"
    if len(cases) < rows:
        note += f"; {rows - len(cases)} row(s) with nothing to answer"
    return note


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

    if ctx.spec.task == Task.PREFERENCE:
        from chattune.pipeline.preference import evaluate_preferences

        scores, summary = evaluate_preferences(ctx, as_model)
        _write_table(ctx.step_dir, scores, summary)
        return EvaluateOutput(metrics=scores, note=summary)
    test_split = ctx.inputs.preprocess.splits.get("test")
    cases: list[GenerationCase] = []
    note = None
    if ctx.spec.data.generation_test:
        rows = read_conversations(ctx.spec.data.generation_test, ctx.spec.data.format)[: ctx.spec.evaluation.max_rows]
        cases = [case for case in (generation_case(r) for r in rows) if case is not None]
        note = generation_note(cases, len(rows))
        ctx.progress(f"  {note}")
    scored = [i for i, c in enumerate(cases) if c.reference is not None]

    metrics: dict[str, dict[str, float]] = {"base": {}, "tuned": {}}
    predictions: dict[str, list[str]] = {}
    for which in ("base", "tuned"):
        with as_model(which) as model:
            if test_split:
                metrics[which].update(_loss(model, tokenizer, load_from_disk(test_split.path), ctx))
            if cases:
                gen = ChatGenerator(model, tokenizer)
                params = GenerationParams(max_new_tokens=ctx.spec.evaluation.max_new_tokens)
                outs: list[str] = []
                size = ctx.spec.evaluation.batch_size
                for i in range(0, len(cases), size):
                    outs += [g.text for g in gen.generate([c.prompt for c in cases[i : i + size]], params)]
                    ctx.progress(f"  {which}: generated {len(outs)}/{len(cases)}")
                predictions[which] = outs
                if scored:
                    references = [str(cases[i].reference) for i in scored]
                    metrics[which].update(text_metrics([outs[i] for i in scored], references))
        computed = ", ".join(f"{k} {v:.4g}" for k, v in metrics[which].items())
        ctx.progress(f"  {which}: {computed or 'no metrics (no test file, and no reference answer to score)'}")

    _write_table(ctx.step_dir, metrics, note)
    if cases:
        with (ctx.step_dir / "predictions.jsonl").open("w", encoding="utf-8") as fh:
            for i, case in enumerate(cases):
                row = {
                    "line": case.line,
                    "prompt": case.prompt,
                    "reference": case.reference,
                    "base": predictions["base"][i],
                    "tuned": predictions["tuned"][i],
                }
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return EvaluateOutput(metrics=metrics, generation_rows=len(cases), reference_rows=len(scored), note=note)
