"""GGUF files: loaded with transformers' GGUF loader (dequantized) and saved once as plain safetensors.

The embedded default model (a GGUF inside a PyPI wheel, ``importer``) and a user's ``.gguf`` file
(``models import NAME --from FILE.gguf``) go through the same conversion.
"""

from __future__ import annotations

from pathlib import Path


def convert_gguf(gguf_file: Path, out: Path) -> None:
    """Load a GGUF file with transformers and save it as safetensors + tokenizer (chat template included) in ``out``.

    Args:
        gguf_file: The ``.gguf`` file.
        out: The folder to write (created).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    folder, name = gguf_file.parent, gguf_file.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    # A model loaded from GGUF refuses training; it is dequantized already, so drop the quantization marker and
    # save plain safetensors that train and serve like any other checkpoint.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    setattr(model, "hf_quantizer", None)  # noqa: B010 - the attribute is typed as non-optional
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
