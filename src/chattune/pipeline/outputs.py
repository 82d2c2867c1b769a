"""What each step produces, typed; the one place that turns a step's output into its JSON record and back.

A step's record (``StepRun.outputs`` in the store, ``steps[].outputs`` in ``jobs show --json``) is
``output.model_dump(mode="json")``; ``read_output(step, record)`` reads it back. Records written by an older
chattune may carry keys that are gone: they are ignored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field


class StepOutput(BaseModel):
    """Base of the step outputs: frozen, and tolerant of keys an older record carries."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    def to_record(self) -> dict[str, Any]:
        """The JSON record stored with the step."""
        return self.model_dump(mode="json")


class FileCheck(StepOutput):
    """One data file as validated."""

    path: str
    sha256: str
    rows: int
    # The chat format the rows were read in, and how it was decided (given, detected from line N).
    format: str = "openai"
    format_source: str = "default"
    valid: bool
    warnings: int
    dropped_rows: int = 0


class ValidateOutput(StepOutput):
    """``validate``: every data file by its role (train, validation, test, generation_test)."""

    files: dict[str, FileCheck]


class ModelImportOutput(StepOutput):
    """``model_import``: the base model in the workspace."""

    name: str
    path: str
    content_hash: str


class SplitStats(StepOutput):
    """One tokenized split on disk and what preprocessing did to its rows."""

    path: str
    rows: int
    kept: int
    tokens: int
    truncated: int = 0
    too_few_messages: int = 0
    # Rows whose every assistant turn has OpenAI's weight 0: context only, nothing to train.
    no_trained_turn: int = 0
    no_assistant_tokens: int = 0
    system_folded: int = 0


class PreprocessOutput(StepOutput):
    """``preprocess``: the tokenized splits and the effective sequence length."""

    # min(max_seq_length, the model's context); -1 resolved to the model's context.
    max_seq_length: int
    system_folded_into_user: bool
    splits: dict[str, SplitStats]
    chat_template_sha256: str | None = None

    @property
    def train(self) -> SplitStats:
        """The training split (always present)."""
        return self.splits["train"]


class FinetuneOutput(StepOutput):
    """``finetune``: the trained weights (or LoRA adapter) and the training metrics."""

    trained_model: Path
    kind: Literal["lora", "full"]
    metrics: dict[str, Any] = Field(default_factory=dict)


class EvaluateOutput(StepOutput):
    """``evaluate``: metrics of the base and the fine-tuned model side by side."""

    metrics: dict[str, dict[str, float]]
    # generation_test rows answered, and those among them with a reference answer (the text metrics' rows).
    generation_rows: int = 0
    reference_rows: int = 0
    # What was computed on how many rows, as the job log and metrics.md say it.
    note: str | None = None


OUTPUT_TYPES: dict[str, type[StepOutput]] = {
    "validate": ValidateOutput,
    "model_import": ModelImportOutput,
    "preprocess": PreprocessOutput,
    "finetune": FinetuneOutput,
    "evaluate": EvaluateOutput,
}

T = TypeVar("T", bound=StepOutput)


def read_output(step: str, record: dict[str, Any]) -> StepOutput:
    """The typed output of ``step`` from its stored JSON record."""
    return OUTPUT_TYPES[step].model_validate(record)


class StepOutputs:
    """The outputs of the steps that have run so far in a job, by step name, typed."""

    def __init__(self, outputs: dict[str, StepOutput] | None = None):
        self._outputs: dict[str, StepOutput] = dict(outputs or {})

    @classmethod
    def from_records(cls, records: dict[str, dict[str, Any]]) -> StepOutputs:
        """Read back what ``to_records`` wrote (the torchrun request, a kept or cached step)."""
        return cls({step: read_output(step, record) for step, record in records.items()})

    def to_records(self) -> dict[str, dict[str, Any]]:
        """Every output as its JSON record."""
        return {step: output.to_record() for step, output in self._outputs.items()}

    def add(self, step: str, output: StepOutput) -> None:
        """Record ``step``'s output."""
        self._outputs[step] = output

    def __contains__(self, step: object) -> bool:
        return step in self._outputs

    def _get(self, step: str, kind: type[T]) -> T:
        output = self._outputs[step]
        if not isinstance(output, kind):  # pragma: no cover - add() is only given the step's own type
            raise TypeError(f"{step} produced {type(output).__name__}, not {kind.__name__}")
        return output

    @property
    def validate(self) -> ValidateOutput:
        """The validate step's output (KeyError before it ran)."""
        return self._get("validate", ValidateOutput)

    @property
    def model_import(self) -> ModelImportOutput:
        """The model_import step's output."""
        return self._get("model_import", ModelImportOutput)

    @property
    def preprocess(self) -> PreprocessOutput:
        """The preprocess step's output."""
        return self._get("preprocess", PreprocessOutput)

    @property
    def finetune(self) -> FinetuneOutput:
        """The finetune step's output."""
        return self._get("finetune", FinetuneOutput)

    @property
    def evaluate(self) -> EvaluateOutput:
        """The evaluate step's output."""
        return self._get("evaluate", EvaluateOutput)
