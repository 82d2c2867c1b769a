"""A user's model in the workspace catalog: ``models import NAME --from SOURCE``.

SOURCE is a local folder in Hugging Face layout, a hub id (``owner/name``, optionally ``@revision``; fetched with
``huggingface_hub`` into its usual cache) or a ``.gguf`` file (loaded with transformers' GGUF loader and saved once as
safetensors, as the embedded model is). The model's files are copied into the workspace's models directory under
their content hash, its catalog values are derived (``chattune.catalog.derived``) and the entry is stored in the
workspace database (``user_models``).

Re-import rule, as a registry has it: the same NAME with the same content (and the same derived values) is reused;
with different content it is refused (ConflictError) unless ``force`` is given, which points NAME at the new weights
and bumps its version. Jobs and registered versions made from the old weights keep them: they refer to the content
hash and its folder, which is never deleted by a re-import.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from chattune.catalog import CatalogEntry, ModelSource, find_entry
from chattune.catalog.derived import derive
from chattune.catalog.lookup import user_entry
from chattune.entities import UserModel
from chattune.errors import ConflictError, OfflineError, UserError
from chattune.settings import Settings
from chattune.store.base import UserModelStore

# A name that cannot be taken for a path, a NAME:VERSION or a NAME@ALIAS reference.
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
HUB_ID_RE = re.compile(r"(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(@(?P<revision>[\w./-]+))?")
# What a model folder needs besides its weights: config, generation config, tokenizer files, chat template. No *.py:
# chattune runs no code shipped with a model.
SIDE_FILES = {".json", ".model", ".txt", ".jinja", ".tiktoken"}


@dataclass(frozen=True)
class UserImport:
    """The result of ``models import NAME --from SOURCE``.

    Attributes:
        entry: The catalog entry as stored.
        reused: The same content was imported under this name before; nothing changed.
        replaced: With ``force``, the content hash the name pointed to before (None otherwise).
    """

    entry: CatalogEntry
    reused: bool = False
    replaced: str | None = None


def check_name(name: str) -> str:
    """A user model's name: letters, digits, ``.``, ``_``, ``-``; not a built-in entry's.

    Raises:
        UserError: The name has other characters.
        ConflictError: A built-in catalog entry has this name.
    """
    if not NAME_RE.fullmatch(name):
        raise UserError(
            f"model name {name!r}: use letters, digits, '.', '_' and '-' (at most 64, starting with a letter or digit)",
            remedy="e.g. `chattune models import my-qwen --from ./Qwen2.5-0.5B-Instruct`.",
        )
    builtin = find_entry(name)
    if builtin is not None:
        raise ConflictError(
            f"{name!r} is the built-in catalog model {builtin.name!r}; an imported model cannot take its name",
            remedy="Choose another NAME for the import.",
        )
    return name


def parse_source(source: str) -> ModelSource:
    """What ``--from`` names: a folder, a ``.gguf`` file (both when they exist here) or a hub id.

    Raises:
        UserError: SOURCE is none of these.
    """
    path = Path(source).expanduser()
    if path.is_dir():
        return ModelSource(kind="folder", path=str(path.resolve()))
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise UserError(
                f"--from {source}: a file, but not a .gguf file",
                remedy="Give a model folder (config.json, weights, tokenizer), a .gguf file, or a hub id owner/name.",
            )
        return ModelSource(kind="gguf_file", path=str(path.resolve()))
    match = HUB_ID_RE.fullmatch(source)
    if match is None:
        raise UserError(
            f"--from {source}: no such folder or file here, and not a hub id (owner/name[@revision])",
            remedy="Give a model folder, a .gguf file, or a Hugging Face hub id such as Qwen/Qwen2.5-0.5B-Instruct.",
        )
    return ModelSource(kind="hub", repo_id=match["repo"], revision=match["revision"])


def import_user_model(
    settings: Settings,
    store: UserModelStore,
    name: str,
    source: str,
    *,
    chat_template: str | None = None,
    lora_target_modules: str | None = None,
    force: bool = False,
    progress: Callable[[str], None] = lambda line: None,
) -> UserImport:
    """Import SOURCE as the workspace's catalog model NAME (see the module's docstring for the re-import rule).

    Args:
        settings: The workspace settings (its models directory).
        store: The workspace database.
        name: The catalog name to give the model.
        source: A model folder, a hub id (``owner/name[@revision]``) or a ``.gguf`` file.
        chat_template: ``--chat-template``: a shipped template's name or a template file, replacing the tokenizer's.
        lora_target_modules: ``all-linear`` (default), ``peft`` or comma-separated module names.
        force: Point an existing NAME at different content.
        progress: Called with a line per stage.

    Returns:
        The stored entry, and whether it was reused or replaced another.

    Raises:
        UserError: A bad name or source, a model that cannot be trained (see ``derive``), an unreadable GGUF file.
        ConflictError: NAME exists with different content and ``force`` is not given, or is a built-in name.
        OfflineError: A hub id while no hub is reachable and the model is not in the hub cache.
    """
    from chattune.catalog.importer import META_FILE, content_hash
    from chattune.templates import chat_template_choice

    check_name(name)
    origin = parse_source(source)
    choice = chat_template_choice(chat_template) if chat_template else None
    existing = store.find_user_model(name)
    if existing is not None:
        name = existing.name  # names are matched case-insensitively; the first spelling stays
    settings.models_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=settings.models_dir, prefix=".import-") as tmp:
        work = Path(tmp) / "model"
        progress(f"reading {origin.label}")
        template_source = _materialize(origin, work)
        progress("deriving the catalog values (chat template, loss mask, LoRA targets, sizes)")
        derived = derive(
            work, chat_template=choice, template_source=template_source, lora_target_modules=lora_target_modules
        )
        (work / META_FILE).write_text(json.dumps({"name": name, "source": origin.key}, indent=2))
        digest = content_hash(work)
        record = derived.model_dump(mode="json")
        same = existing is not None and existing.content_hash == digest and existing.derived == record
        if same and existing is not None and Path(existing.path).is_dir():
            return UserImport(user_entry(existing), reused=True)
        if existing is not None and not same and not force:
            raise ConflictError(
                f"model {name!r} exists (version {existing.version}, imported from "
                f"{ModelSource.model_validate(existing.source).label}, content {existing.content_hash[:12]}) and "
                f"this import differs (content {digest[:12]}"
                + ("" if existing.content_hash != digest else ", same weights, other derived values")
                + ")",
                remedy="Import it under another NAME, or pass --force to point the name at the new import (jobs and "
                "registered versions made from the old one keep its weights).",
            )
        final = settings.models_dir / digest
        if not final.exists():
            os.replace(work, final)  # atomic: a model directory is either whole or absent
    model = UserModel(
        name=name,
        version=existing.version if same and existing else str(int(existing.version) + 1) if existing else "1",
        content_hash=digest,
        path=str(final),
        source=origin.model_dump(mode="json", exclude_defaults=True),
        derived=record,
        created_at=time.time(),
    )
    store.save_user_model(model)
    return UserImport(user_entry(model), replaced=existing.content_hash if existing is not None and not same else None)


def _materialize(origin: ModelSource, work: Path) -> str | None:
    """Write the source's model files into ``work``; return where its chat template comes from, when files won't say."""
    if origin.kind == "gguf_file":
        assert origin.path is not None
        _convert(Path(origin.path), work)
        return f"GGUF metadata of {Path(origin.path).name}: tokenizer.chat_template"
    if origin.kind == "hub":
        folder = _snapshot(origin)
    else:
        assert origin.path is not None
        folder = Path(origin.path)
    _copy_model_files(folder, work)
    return None


def _convert(gguf_file: Path, work: Path) -> None:
    from chattune.catalog.gguf import convert_gguf

    try:
        convert_gguf(gguf_file, work)
    except Exception as exc:  # a damaged or unsupported file fails anywhere in the reader (struct, KeyError, ...)
        raise UserError(
            f"{gguf_file}: transformers cannot load this GGUF file: {type(exc).__name__}: {str(exc)[:300]}",
            remedy="Use a GGUF of an architecture transformers' GGUF loader supports (llama, mistral, qwen2, phi3, "
            "gemma2/3, ...) in a quantization it dequantizes, or import the model's Hugging Face folder instead.",
        ) from exc


def _snapshot(origin: ModelSource) -> Path:
    """The hub snapshot (downloaded into the hub cache, or found there offline)."""
    from chattune.catalog.importer import _snapshot_from_hub

    try:
        return _snapshot_from_hub(origin)
    except OfflineError as exc:
        raise OfflineError(
            f"{exc.message} (if you meant a local folder: {origin.repo_id} does not exist here)",
            remedy="Without a reachable hub, download the model on a connected machine (`hf download "
            f"{origin.repo_id} --local-dir DIR`), bring DIR here and import the folder: "
            "`chattune models import NAME --from DIR`.",
        ) from exc


def _copy_model_files(folder: Path, work: Path) -> None:
    """Copy a Hugging Face folder's config, weights and tokenizer files (safetensors preferred over .bin)."""
    if not (folder / "config.json").is_file() and (folder / "adapter_config.json").is_file():
        raise UserError(
            f"{folder}: a PEFT adapter (adapter_config.json), not a whole model",
            remedy="Import the base model the adapter was trained on; fine-tuned adapters are registered versions "
            "(`chattune models register --job JOB`).",
        )
    if not (folder / "config.json").is_file():
        raise UserError(
            f"{folder}: no config.json, so this is not a model folder in Hugging Face layout",
            remedy="Give the folder that holds config.json, the weights (*.safetensors or pytorch_model*.bin) and "
            "the tokenizer files.",
        )
    files = sorted(p for p in folder.iterdir() if p.is_file())
    weights = [p for p in files if p.suffix == ".safetensors"]
    fallback = not weights
    if fallback:
        weights = [p for p in files if p.suffix == ".bin" and p.name.startswith("pytorch_model")]
    if not weights:
        raise UserError(
            f"{folder}: config.json but no weights (*.safetensors or pytorch_model*.bin)",
            remedy="Give the folder with the model's weight files (for a hub model, the one its files were saved to).",
        )
    side = [
        p for p in files if p.suffix in SIDE_FILES and (fallback or not p.name.startswith("pytorch_model.bin.index"))
    ]
    work.mkdir(parents=True)
    for file in [*weights, *side]:
        shutil.copyfile(file, work / file.name)  # hub snapshots are symlinks into the blob store: the bytes are copied
