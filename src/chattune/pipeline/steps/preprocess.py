"""preprocess: apply the model's chat template, mark assistant tokens for the loss, truncate, split.

Each file is read in its chat format (detected, or the job's ``data.format``) and converted into messages. Azure's
rules, with nothing dropped silently: validation defaults to the last 20% of train (a contiguous slice,
as Azure does); a template without a system role gets the system message folded into the first user message;
sequences are truncated to min(max_seq_length, model max); every assistant turn is trained (but those
with OpenAI's ``weight: 0``) and nothing else;
rows that lose every assistant token to truncation are counted, and the step fails if none is left.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from chattune.data.conversations import read_conversations
from chattune.entities import Task
from chattune.errors import DataError
from chattune.inference import context_length, load_tokenizer
from chattune.pipeline.context import KeyInputs, StepContext
from chattune.pipeline.outputs import PreprocessOutput, SplitStats
from chattune.templates import encode, supports_system_role, template_hash, training_chat_template

VALIDATION_FRACTION = 0.2
T = TypeVar("T")


def tokenize(
    conversations: list[list[dict[str, Any]]], tokenizer: Any, template: str, max_len: int, fold: bool
) -> tuple[dict[str, list[Any]], dict[str, int]]:
    """Token ids and assistant masks per row (via the template's {% generation %} markers), truncated.

    Assistant turns with ``weight: 0`` are context: in the ids, not in the mask.
    """
    columns: dict[str, list[Any]] = {"input_ids": [], "assistant_masks": []}
    counts = {
        "rows": len(conversations),
        "too_few_messages": 0,
        "no_trained_turn": 0,
        "truncated": 0,
        "no_assistant_tokens": 0,
        "system_folded": 0,
        "tokens": 0,
    }
    for messages in conversations:
        if len(messages) < 2:  # Azure drops these; here they are counted and reported
            counts["too_few_messages"] += 1
            continue
        if all(m.get("weight") == 0 for m in messages if m["role"] == "assistant") and any(
            m["role"] == "assistant" for m in messages
        ):
            counts["no_trained_turn"] += 1  # every answer is context (weight 0): nothing to learn
            continue
        if fold and messages and messages[0]["role"] == "system":
            counts["system_folded"] += 1
        ids, mask = encode(tokenizer, messages, template, fold)
        if len(ids) > max_len:
            counts["truncated"] += 1
            ids, mask = ids[:max_len], mask[:max_len]
        if 1 not in mask:
            counts["no_assistant_tokens"] += 1
            continue
        columns["input_ids"].append(ids)
        columns["assistant_masks"].append(mask)
        counts["tokens"] += len(ids)
    return columns, counts


def read_splits(ctx: StepContext, read: Callable[[str], list[T]], unit: str) -> dict[str, list[T]]:
    """The job's rows by split, each file read with ``read``.

    Train (its first ``data.max_train_rows``), validation (its file, else the last 20% of train, as Azure does) and
    test (its first ``evaluation.max_rows``).
    """
    data = ctx.spec.data
    train = read(data.train)[: data.max_train_rows or None]
    if data.validation:
        validation = read(data.validation)
    else:
        cut = len(train) - max(1, int(len(train) * VALIDATION_FRACTION))
        train, validation = train[:cut], train[cut:]
        ctx.progress(f"  validation: the last {len(validation)} {unit} of train (no validation file given)")
    splits = {"train": train, "validation": validation}
    if data.test:
        splits["test"] = read(data.test)[: ctx.spec.evaluation.max_rows]
    return splits


class Preprocess:
    """The ``preprocess`` step."""

    name = "preprocess"
    needs: tuple[str, ...] = ("validate", "model_import")

    def cache_key(self, given: KeyInputs) -> dict[str, Any] | None:
        """The base model's content, the sequence length and the row limits."""
        return {
            "model": given.inputs.model_import.content_hash,
            "max_seq_length": given.resolved.training.max_seq_length,
            "max_train_rows": given.spec.data.max_train_rows,
            "test_rows": given.spec.evaluation.max_rows,
        }

    def run(self, ctx: StepContext) -> PreprocessOutput:
        """Tokenize every split with the training chat template."""
        return run(ctx)


STEP = Preprocess()


def run(ctx: StepContext) -> PreprocessOutput:
    """The preprocess step: tokenize each split with the training chat template and save it as a dataset.

    Without a validation file, the last rows of train become the validation split.

    Raises:
        DataError: No row of a split keeps an assistant token after truncation.
    """
    from datasets import Dataset

    if ctx.spec.task == Task.PREFERENCE:
        from chattune.pipeline.preference import preprocess_preferences

        return preprocess_preferences(ctx)
    model_path = ctx.inputs.model_import.path
    tokenizer = load_tokenizer(model_path)
    train_template = training_chat_template(tokenizer)
    fold = not supports_system_role(tokenizer)
    max_len = ctx.resolved.max_length(context_length(model_path, tokenizer))

    data = ctx.spec.data

    def read(path: str) -> list[list[dict[str, Any]]]:
        return [c.messages for c in read_conversations(path, data.format)]

    splits = read_splits(ctx, read, "rows")
    stats: dict[str, SplitStats] = {}
    for name, conversations in splits.items():
        columns, counts = tokenize(conversations, tokenizer, train_template, max_len, fold)
        if counts["too_few_messages"]:
            ctx.log.warning("%s: %d row(s) with fewer than 2 messages left out", name, counts["too_few_messages"])
        if counts["no_trained_turn"]:
            ctx.log.warning(
                "%s: %d row(s) whose every assistant turn has weight 0 left out", name, counts["no_trained_turn"]
            )
        if counts["no_assistant_tokens"]:
            ctx.log.warning(
                "%s: %d row(s) lost every assistant token to truncation at %d tokens; they are left out",
                name,
                counts["no_assistant_tokens"],
                max_len,
            )
        if not columns["input_ids"]:
            raise DataError(
                f"{name}: no row keeps an assistant token after truncation to {max_len} tokens",
                remedy="Raise training.max_seq_length (or shorten the conversations).",
            )
        path = ctx.step_dir / name
        Dataset.from_dict(columns).save_to_disk(str(path))
        stats[name] = SplitStats(path=str(path), **counts, kept=len(columns["input_ids"]))
        ctx.progress(
            f"  {name}: {len(columns['input_ids'])}/{counts['rows']} rows, {counts['tokens']} tokens, "
            f"{counts['truncated']} truncated, {counts['no_assistant_tokens']} without assistant tokens, "
            f"{counts['too_few_messages']} with fewer than 2 messages"
            + (f", {counts['no_trained_turn']} with every answer at weight 0" if counts["no_trained_turn"] else "")
        )
    (ctx.step_dir / "training_chat_template.jinja").write_text(train_template)
    return PreprocessOutput(
        max_seq_length=max_len,
        system_folded_into_user=fold,
        splits=stats,
        chat_template_sha256=template_hash(tokenizer.chat_template),
    )
