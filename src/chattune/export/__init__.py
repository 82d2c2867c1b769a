"""``models export``: a registered version as a standalone Hugging Face folder or as a GGUF file for llama.cpp/Ollama.

Both start from the same merged folder: a LoRA version's adapter folded into its base (PEFT's merge, in fp32), or a
full version's weights, saved with the version's tokenizer and chat template. ``hf`` is that folder in the asked
dtype; ``gguf`` converts it (chattune.export.gguf) and writes an Ollama Modelfile beside the file. The result is
written to a hidden folder beside ``out`` and renamed into place, so a failed export leaves nothing behind.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from chattune.entities import ModelVersion
from chattune.errors import ConflictError, UserError

ExportFormat = Literal["hf", "gguf"]
FORMATS: tuple[str, ...] = ("hf", "gguf")
# GGUF's names for the float types, and the torch dtype each one is.
DTYPES = {"f32": "float32", "f16": "float16", "bf16": "bfloat16"}
QUANTS: tuple[str, ...] = ("q8_0",)
MODELFILE = "Modelfile"


@dataclass
class ExportedFile:
    """One file the export wrote, relative to its folder."""

    path: str
    bytes: int


@dataclass
class Export:
    """What ``models export`` wrote."""

    model: str
    format: str
    dtype: str
    quant: str | None
    out: str
    merged: bool  # a LoRA version's adapter folded into its base
    files: list[ExportedFile] = field(default_factory=list)
    architecture: str | None = None  # the GGUF's general.architecture
    template_family: str | None = None  # the chat template the Modelfile writes (None: Ollama reads the GGUF's)


def check_options(fmt: str, dtype: str | None, quant: str | None, out: Path) -> None:
    """Refuse what cannot be exported, before any weights are read.

    Raises:
        UserError: an unknown format, dtype or quantization, or a quantization asked of ``hf``.
        ConflictError: ``out`` exists and is not an empty folder.
    """
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt!r} is not one of {', '.join(FORMATS)}", remedy="Use --format hf or gguf.")
    if dtype is not None and dtype not in DTYPES:
        raise UserError(f"--dtype {dtype!r} is not one of {', '.join(DTYPES)}", remedy="Use --dtype f16, bf16 or f32.")
    if quant is not None:
        if fmt != "gguf":
            raise UserError("--quant applies to --format gguf only", remedy="Drop --quant, or add --format gguf.")
        if quant not in QUANTS:
            raise UserError(f"--quant {quant!r} is not one of {', '.join(QUANTS)}", remedy="Use --quant q8_0.")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConflictError(
            f"--out {out} exists and is not an empty folder", remedy="Name a new folder; nothing is overwritten."
        )


def export_version(mv: ModelVersion, fmt: str, out: Path, dtype: str | None = None, quant: str | None = None) -> Export:
    """Export version ``mv`` to the folder ``out`` (created; absent or empty).

    Args:
        mv: The registered version.
        fmt: ``hf`` (a merged model folder) or ``gguf`` (a GGUF file and an Ollama Modelfile).
        out: The folder to write.
        dtype: ``f32``, ``f16`` or ``bf16``; default: the base checkpoint's for ``hf``, ``f16`` for ``gguf``.
        quant: ``q8_0`` (gguf only): 8-bit blocks for the 2-D weights; the rest stays in ``dtype``.
    """
    from chattune.inference import saved_dtype

    check_options(fmt, dtype, quant, out)
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    merged = mv.kind == "lora"
    source = Path(mv.base_model_path if merged else mv.path)
    torch_dtype = DTYPES[dtype] if dtype else saved_dtype(source) if fmt == "hf" else "float16"
    result = Export(
        model=mv.id,
        format=fmt,
        dtype=next(k for k, v in DTYPES.items() if v == torch_dtype),
        quant=quant,
        out=str(out),
        merged=merged,
    )
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.partial-"))
    try:
        if fmt == "hf":
            _merged_folder(mv, staging, torch_dtype)
        else:
            _gguf(mv, staging, result)
        if out.exists():
            out.rmdir()
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    result.files = [
        ExportedFile(str(p.relative_to(out)), p.stat().st_size) for p in sorted(out.rglob("*")) if p.is_file()
    ]
    return result


def _merged_folder(mv: ModelVersion, folder: Path, torch_dtype: str) -> None:
    """The version as one standalone model folder (weights in ``torch_dtype``, tokenizer, chat template)."""
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    from chattune.inference import load_tokenizer, save_merged

    if mv.kind == "lora":
        save_merged(mv.base_model_path, mv.path, folder, dtype=torch_dtype)
        return
    hf_logging.disable_progress_bar()
    model = AutoModelForCausalLM.from_pretrained(mv.path, dtype=getattr(torch, torch_dtype))
    model.save_pretrained(str(folder))
    load_tokenizer(mv.path).save_pretrained(str(folder))


def _gguf(mv: ModelVersion, folder: Path, result: Export) -> None:
    """A GGUF file of the merged version and an Ollama Modelfile beside it."""
    from chattune.export.gguf import write_gguf
    from chattune.export.ollama import modelfile
    from chattune.inference import load_tokenizer

    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=".merged-") as merged:
        _merged_folder(mv, Path(merged), "float32")
        name = f"{mv.name}-{mv.version}-{result.quant or result.dtype}.gguf"
        result.architecture = write_gguf(Path(merged), folder / name, dtype=result.dtype, quant=result.quant)
        text, result.template_family = modelfile(name, load_tokenizer(merged))
    (folder / MODELFILE).write_text(text, encoding="utf-8")
