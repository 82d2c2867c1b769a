"""The workspace's services over the catalog, this machine's compute and data files.

Jobs, the registry and endpoints have services of their own (``JobService``, ``Registry``, ``EndpointService``); these
three give the catalog, compute and data the same shape on ``Workspace``, so that the CLI, the SDK and quickstart
reach every service as ``ws.<service>.<verb>``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chattune import compute as compute_lib
from chattune.catalog import CatalogEntry
from chattune.catalog.lookup import Catalog
from chattune.errors import UserError
from chattune.settings import Settings
from chattune.store import ComputeStore, Store

if TYPE_CHECKING:
    from chattune.catalog.importer import ImportedModel
    from chattune.catalog.user_import import UserImport
    from chattune.compute import CheckResult, ComputeInfo, MemoryEstimate
    from chattune.compute.targets import ComputeTargets
    from chattune.data.tokens import TokenCounter
    from chattune.data.validate import FileReport


class CatalogService:
    """The workspace's model catalog (the built-in entries and the user's imports) and the base weights."""

    def __init__(self, settings: Settings, store: Callable[[], Store]) -> None:
        self.settings = settings
        self._store = store  # opened only when weights are imported or a name is not built in
        self.lookup = Catalog(store)

    def list(self) -> list[CatalogEntry]:
        """Every catalog entry: the built-in ones, then the models imported into this workspace."""
        return self.lookup.list()

    def get(self, name: str) -> CatalogEntry:
        """The entry ``name`` (or a built-in display name); raises NotFoundError listing the valid names."""
        return self.lookup.get(name)

    def find(self, name: str) -> CatalogEntry | None:
        """The entry ``name`` (or a built-in display name), or None."""
        return self.lookup.find(name)

    def import_from(
        self,
        name: str,
        source: str,
        *,
        chat_template: str | None = None,
        lora_target_modules: str | None = None,
        force: bool = False,
        progress: Callable[[str], None] = lambda line: None,
    ) -> UserImport:
        """Import a model of the user's as the workspace's catalog entry ``name`` (``models import NAME --from``).

        Args:
            name: The catalog name to give it.
            source: A model folder in Hugging Face layout, a hub id (``owner/name[@revision]``) or a ``.gguf`` file.
            chat_template: A shipped template's name or a Jinja file, replacing (or supplying) the tokenizer's.
            lora_target_modules: ``all-linear`` (default), ``peft`` (PEFT's default for the architecture) or
                comma-separated module names.
            force: Point an existing ``name`` at different content (else that is a ConflictError).
            progress: Called with one line per stage.

        Returns:
            The stored entry, with its derived values, and whether it was reused or replaced another.
        """
        from chattune.catalog.user_import import import_user_model

        return import_user_model(
            self.settings,
            self._store(),
            name,
            source,
            chat_template=chat_template,
            lora_target_modules=lora_target_modules,
            force=force,
            progress=progress,
        )

    def import_model(self, ref: str) -> ImportedModel:
        """Materialize a catalog model's (or a local directory's) weights in the workspace, once per content hash.

        Args:
            ref: A catalog name or a local model directory.

        Returns:
            Where the weights are, their content hash, and whether they were there already.
        """
        from chattune.catalog.importer import import_model

        return import_model(self.settings, self._store(), ref)


class ComputeService:
    """This machine's devices, whether a catalog model can be fine-tuned on them, and the workspace's compute targets.

    Args:
        catalog_service: The workspace's catalog (built-in and imported models).
        store: The workspace database, opened on first use (only the compute targets need it).
    """

    def __init__(self, catalog_service: CatalogService, store: Callable[[], ComputeStore]) -> None:
        self._catalog = catalog_service
        self._store = store

    @property
    def targets(self) -> ComputeTargets:
        """The named compute targets: ``local`` and Ray clusters (add, start-ray, stop-ray, list)."""
        from chattune.compute.targets import ComputeTargets

        return ComputeTargets(self._store())

    def detect(self) -> ComputeInfo:
        """GPUs, CPU cores and RAM of this machine."""
        return compute_lib.detect()

    def check(self, model: str, **options: Any) -> CheckResult:
        """The catalog's allow list and a training memory estimate for ``model`` on this machine.

        Args:
            model: A catalog name (built-in or imported).
            **options: ``compute.check``'s options (``lora``, ``precision``, ``seq_len``, ``batch_size``, ...).

        Returns:
            The check's result; ``ok`` is False when the model cannot run here.
        """
        return compute_lib.check(self._catalog.get(model), compute_lib.detect(), **options)

    def estimate(self, entry: CatalogEntry, **options: Any) -> MemoryEstimate:
        """The training memory estimate of ``compute check`` for a catalog entry, with its defaults.

        Args:
            entry: The catalog entry (its parameter count and sizes).
            **options: ``compute.estimate_training_memory``'s options; by default ``compute check``'s (LoRA,
                precision 32, 512 tokens, batch 1).

        Returns:
            The estimate per device, by part.
        """
        chosen = {**compute_lib.CHECK_DEFAULTS, **options}
        return compute_lib.estimate_training_memory(
            entry.parameters,
            lora=chosen.pop("lora"),
            hidden=entry.hidden_size,
            layers=entry.num_hidden_layers,
            vocab=entry.vocab_size,
            **chosen,
        )


class DataService:
    """Chat data files: validate, import, the demo dataset, downloads."""

    def __init__(self, catalog_service: CatalogService) -> None:
        self._catalog = catalog_service

    def token_counter(self, model: str | None, max_seq_length: int | None = None) -> TokenCounter | None:
        """A counter of tokens with ``model``'s chat template (imported first), or None without a model.

        Args:
            model: A catalog name or model directory, or None.
            max_seq_length: The truncation length to report against (needs ``model``).

        Returns:
            The counter, or None.
        """
        if model is None:
            if max_seq_length is not None:
                raise UserError("--max-seq-length needs --model (tokens are counted with that model's chat template)")
            return None
        from chattune.data.tokens import TokenCounter

        return TokenCounter.for_model(self._catalog.import_model(model).path, max_seq_length)

    def validate(
        self,
        files: Sequence[Path],
        *,
        min_rows: int = 1,
        counter: TokenCounter | None = None,
        fmt: str | None = None,
        generation: bool = False,
    ) -> list[FileReport]:
        """Check files and report every error at once (file:line, field, code).

        Args:
            files: jsonl, json, parquet or csv files.
            min_rows: The least number of usable rows in each.
            counter: Counts tokens with a model's chat template, when given.
            fmt: The chat format of every file (``openai``, ``alpaca``, ...); None detects each file's.
            generation: The files are generation tests (prompts, with or without a reference answer).

        Returns:
            One report per file.
        """
        from chattune.data.validate import validate_files

        return validate_files(
            files, min_rows=min_rows, counter=counter, fmt=fmt, generation_paths=files if generation else ()
        )

    def validate_preferences(
        self, files: Sequence[Path], *, min_rows: int = 1, counter: TokenCounter | None = None
    ) -> list[FileReport]:
        """Check preference files (prompt, preferred and non-preferred answer) row by row.

        With ``counter``, a pair longer than its model's context is an error.
        """
        from chattune.data.preferences import validate_preferences

        tokenizer, limit = (counter.tokenizer, counter.max_seq_length) if counter else (None, None)
        return [validate_preferences(f, min_rows=min_rows, tokenizer=tokenizer, max_length=limit) for f in files]

    def import_file(self, path: Path, out_dir: Path, fmt: str | None = None) -> tuple[Path, FileReport]:
        """Validate a local file and write it as canonical JSON Lines under ``out_dir``.

        Args:
            path: A data file in any chat format.
            out_dir: Where ``<stem>.jsonl`` is written.
            fmt: The chat format of its rows; None detects it.

        Returns:
            The file written and its validation report.
        """
        from chattune.data.imports import import_file

        return import_file(path, out_dir, fmt)

    def demo(self, out_dir: Path, *, rows: int = 400, seed: int = 0, task: str = "chat_completion") -> dict[str, Path]:
        """Write the built-in demo dataset (ultrachat_200k's schema and split names).

        For ``task`` ``preference``, its pairs (UltraFeedback's split names, train_prefs and test_prefs).
        """
        from chattune.data import demo

        if task == "preference":
            return demo.write_preferences(out_dir, rows=rows, seed=seed)
        return demo.write(out_dir, rows=rows, seed=seed)

    def download(
        self, dataset: str, out_dir: Path, *, percent: int = 5, splits: list[str] | None = None
    ) -> dict[str, Any]:
        """Download the first ``percent`` of every split (or of ``splits``) with Hugging Face datasets."""
        from chattune.data.download import download

        return download(dataset, out_dir, percent=percent, splits=splits)
